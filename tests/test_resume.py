"""A run killed with SIGKILL and resumed finishes with the same results as an uninterrupted run."""
import json
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
