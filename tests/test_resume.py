"""A run killed with SIGKILL and resumed finishes with the same results as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import tiny_config

SCRIPT = """
import os, signal, sys
from transformers import TrainerCallback
from guidetune.config import load_config
from guidetune.experiment import run_training

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == {kill}:
            os.kill(os.getpid(), signal.SIGKILL)

run_training(load_config(sys.argv[1]), resume={resume}, callbacks=[Kill()])
"""


def _run(cfg_path, kill: int, resume: bool):
    code = SCRIPT.replace("{kill}", str(kill)).replace("{resume}", str(resume))
    return subprocess.run([sys.executable, "-c", code, str(cfg_path)], capture_output=True, text=True, timeout=300)


def _losses(run_dir):
    return [(r["step"], r["loss"], r["loss/task"], r["loss/l1"])
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_dirs, cls_data):
    common = dict(train={"max_steps": 10, "save_steps": 4, "logging_steps": 1},
                  regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]}],
                  model={"name": str(tiny_dirs["bert"]), "head": "classification"})
    killed = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="killed", **common)
    whole = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="whole", **common)
    run_dir = tmp_path / "runs" / "killed"

    first = _run(killed, kill=6, resume=False)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert (run_dir / "checkpoints" / "checkpoint-4" / "guidetune.json").exists()
    base = json.loads((run_dir / "checkpoints" / "checkpoint-4" / "guidetune_totals.json").read_text())
    assert base["runtime_s"] > 0 and base["loss_sum"] > 0
    # A checkpoint torn by the kill (no completion marker) must be ignored on resume.
    torn = run_dir / "checkpoints" / "checkpoint-8"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half a file")

    second = _run(killed, kill=-1, resume=True)
    assert second.returncode == 0, second.stderr[-2000:]
    third = _run(whole, kill=-1, resume=False)
    assert third.returncode == 0, third.stderr[-2000:]

    resumed = json.loads((run_dir / "results.json").read_text())
    straight = json.loads((tmp_path / "runs" / "whole" / "results.json").read_text())
    assert resumed["metrics"] == pytest.approx(straight["metrics"], abs=1e-6)
    layer = "encoder.layers.1.out"
    assert resumed["sparsity"][layer] == pytest.approx(straight["sparsity"][layer], rel=1e-5)
    assert resumed["train"]["steps"] == straight["train"]["steps"] == 10
    # Honest totals: HF restarts its loss sum and our clock at the resume; the checkpoint carries both.
    assert resumed["train"]["train_loss"] == pytest.approx(straight["train"]["train_loss"], rel=1e-6)
    assert resumed["train"]["train_loss"] == pytest.approx(sum(x[1] for x in _losses(run_dir)) / 10, abs=1e-3)
    assert resumed["train"]["resumed_from_step"] == 4 and "resumed_from_step" not in straight["train"]
    assert resumed["train"]["runtime_s"] > base["runtime_s"]
    a, b = _losses(run_dir), _losses(tmp_path / "runs" / "whole")
    assert len(a) == len(b) == 10
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=1e-5)
    assert [s for s, *_ in _losses(run_dir)] == list(range(1, 11))  # no duplicated steps after resume


def test_resume_accepts_a_config_saved_before_a_field_existed(tmp_path, tiny_dirs, cls_data):
    """A run saved by an older guidetune (no eval_tasks, no data_fraction) still resumes."""
    import yaml

    from guidetune.config import load_config
    from guidetune.experiment import _check_resumable
    from guidetune.runs import RunDir

    cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="old"))
    run = RunDir(cfg.run_dir)
    old = cfg.to_dict()
    old.pop("eval_tasks")
    old["train"].pop("data_fraction")
    run.write_config(old)
    _check_resumable(run, cfg)  # no error
    changed = cfg.to_dict()
    changed["train"]["lr"] = 0.5
    run.write_config(changed)
    with pytest.raises(Exception, match="its saved config differs in train"):
        _check_resumable(run, cfg)
    assert yaml.safe_load(run.config.read_text())["train"]["lr"] == 0.5


def _cli(capsys, *argv):
    from guidetune.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_finished_run_with_a_changed_config_or_data_is_refused_then_rerun(capsys, tmp_path, tiny_dirs, cls_data):
    import shutil

    for v in cls_data.values():
        shutil.copy(v, tmp_path / v.name)
    data = {k: tmp_path / v.name for k, v in cls_data.items()}
    p = tiny_config(tmp_path, tiny_dirs["bert"], data, name="ident", train={"max_steps": 2})
    run = tmp_path / "runs" / "ident"
    assert _cli(capsys, "train", str(p))[0] == 0
    meta = json.loads((run / "run.json").read_text())
    assert len(meta["run_id"]) == 16 and set(meta["data"]) >= {"task.train", "task.eval", "model.name"}
    code, _, err = _cli(capsys, "train", str(p), "train.lr=0.01")
    assert code == 2 and err.count("\n") == 1
    assert "finished with another configuration (changed: train.lr); pass --rerun-changed" in err
    code, _, err = _cli(capsys, "train", str(p), "train.lr=0.01", "--resume")
    assert code == 2 and "changed: train.lr" in err
    data["train"].write_text(data["train"].read_text() + '{"text": "new", "label": "pos"}\n')
    code, _, err = _cli(capsys, "train", str(p))
    assert code == 2 and "(changed: data task.train)" in err
    assert _cli(capsys, "train", str(p), "--resume")[0] == 2  # data changed: resuming is no way out
    code, out, err = _cli(capsys, "train", str(p), "train.lr=0.01", "--rerun-changed")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["run_id"] != meta["run_id"]
    assert "lr: 0.01" in (run / "config.yaml").read_text()
    code, _, err = _cli(capsys, "train", str(p), "train.lr=0.01")  # same again: exists, say how to resume
    assert code == 2 and "already exists; pass --resume" in err


def test_a_run_that_failed_before_its_first_step_restarts_with_the_fixed_config(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="fails", train={"max_steps": 2},
                    regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.layers.9.out"]}])
    run = tmp_path / "runs" / "fails"
    code, _, err = _cli(capsys, "train", str(p))
    assert code == 2 and "encoder.layers.9.out" in err
    assert not run.exists()  # an error found while setting up leaves nothing behind
    # A crash before the first checkpoint (killed, out of memory) leaves the directory: nothing to resume.
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(p.read_text())
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    code, _, err = _cli(capsys, "train", str(p), "regularizers.0.layers=[encoder.final]")
    assert code == 0, err
    saved = (run / "config.yaml").read_text()
    assert "encoder.final" in saved and "layers.9" not in saved
    assert json.loads((run / "results.json").read_text())["train"]["steps"] == 2
    assert 0.7 not in [json.loads(x).get("loss") for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_being_trained_by_another_process_is_left_alone(capsys, tmp_path, tiny_dirs, cls_data):
    from guidetune.runlock import lock_path, run_lock

    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="busy", train={"max_steps": 2})
    run = tmp_path / "runs" / "busy"
    # Another process started it and has not reached its first checkpoint: to a second `train` this looks
    # like a run that failed before its first step, which it would delete and start again.
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(p.read_text())
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom guidetune.runlock import run_lock\n"
                              "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
                              str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        code, _, err = _cli(capsys, "train", str(p))
        assert code == 2 and err.count("\n") == 1, err
        assert f"run '{run}' is being trained by another process (pid {child.pid}; lock {lock_path(run)})" in err
        assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.7}\n'  # untouched
    finally:
        child.kill()
        child.wait()
    # The holder died (killed, no clean-up): the kernel dropped its lock and the run starts again.
    code, _, err = _cli(capsys, "train", str(p))
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["train"]["steps"] == 2
    assert not lock_path(run).exists()  # released and removed: nothing left beside the runs
    with run_lock(run):
        assert lock_path(run).read_text() == str(os.getpid())
