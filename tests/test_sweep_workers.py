"""guidetune sweep --workers N (local process pool) and --launcher slurm (submitit; its local/debug executors)."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_config
from guidetune.cli import main
from guidetune.errors import GuidetuneError
from guidetune.sweep import run_sweep
from guidetune.sweep_exec import SUBMITIT_HINT, check_workers, parse_slurm_options, plan_resources


def _sweep(tmp_path, tiny_dirs, cls_data, name, **train):
    base = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="base",
                       train={"max_steps": 6, "save_steps": 3, "logging_steps": 1, **train},
                       regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]}])
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"base": base.name, "name": name, "seeds": [0],
                                 "variants": [{"label": "a"}, {"label": "b", "set": {"train.lr": 1e-4}}]}))
    return p


def _metrics(out):
    return {d.name: json.loads((d / "results.json").read_text())["metrics"] for d in sorted(out.iterdir())
            if (d / "results.json").exists()}


def test_bad_workers_and_missing_submitit_are_one_line(tmp_path, tiny_dirs, cls_data, capsys, monkeypatch):
    p = _sweep(tmp_path, tiny_dirs, cls_data, "sw")
    assert main(["sweep", str(p), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --workers: must be an integer >= 1 (runs at once), got 0"
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    assert main(["sweep", str(p), "--launcher", "slurm"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {SUBMITIT_HINT}"
    monkeypatch.delitem(sys.modules, "submitit")
    if importlib.util.find_spec("submitit") is None:  # not importorskip: guidetune imports it (see _submitit)
        pytest.skip("submitit is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert main(["sweep", str(p), "--launcher", "slurm"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --launcher slurm: no SLURM here (sbatch not found)")
    assert not (tmp_path / "runs" / "sw").exists()  # nothing started
    with pytest.raises(GuidetuneError, match="--workers: must be an integer >= 1"):
        check_workers(True)
    assert parse_slurm_options(["time=90", "partition=gpu"]) == {"time": 90, "partition": "gpu"}
    with pytest.raises(GuidetuneError, match="--slurm: expected key=value"):
        parse_slurm_options(["gpu"])


def test_cpu_threads_are_shared_between_workers(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert plan_resources(3) == ([None, None, None], 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert plan_resources(3) == ([0, 1, 0], None)  # one GPU each, round-robin


KILLER = """
import os, signal, sys
from transformers import TrainerCallback
import guidetune.finetune.trainer as tr

class Kill(TrainerCallback):  # the sweep's worker of run a-s0 dies at step 4 (after the checkpoint of step 3)
    def on_step_end(self, args, state, control, **kw):
        if os.environ.get("GT_KILL") and state.global_step == 4 and "/a-s0/" in args.output_dir:
            os.kill(os.getpid(), signal.SIGKILL)

_init = tr.GuidedTrainer.__init__
def _patched(self, *a, **kw):
    kw["callbacks"] = list(kw.get("callbacks") or []) + [Kill()]
    _init(self, *a, **kw)
tr.GuidedTrainer.__init__ = _patched  # module level: spawned workers re-import this file and patch too

if __name__ == "__main__":
    from guidetune.cli import main
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_parallel_sweep_survives_a_killed_worker_and_equals_the_sequential_one(tmp_path, tiny_dirs, cls_data):
    par = _sweep(tmp_path, tiny_dirs, cls_data, "par")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GT_KILL": "1"}
    cmd = [sys.executable, str(script), "sweep", str(par), "--workers", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert first.returncode == 2, first.stderr[-3000:]
    err = re.findall(r"error: (.*)", first.stderr)  # (a progress bar may share the line)
    assert len(err) == 1 and "a-s0: its worker process died" in err[0] and "no summary written" in err[0]
    out = tmp_path / "runs" / "par"
    assert not (out / "summary.md").exists()
    assert (out / "a-s0" / "checkpoints").is_dir() and not (out / "a-s0" / "results.json").exists()

    env.pop("GT_KILL")
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "a seed 0: resume" in second.stdout
    assert (out / "summary.md").exists()
    steps = [json.loads(line)["step"] for line in (out / "a-s0" / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed from step 3; the killed session's step 4 log was cut

    seq = _sweep(tmp_path, tiny_dirs, cls_data, "seq")
    assert main(["sweep", str(seq), "--workers", "1"]) == 0
    assert _metrics(out) == _metrics(tmp_path / "runs" / "seq")


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_submitit_executors_run_the_sweep(tmp_path, tiny_dirs, cls_data, cluster, monkeypatch):
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    p = _sweep(tmp_path, tiny_dirs, cls_data, f"sub{cluster}", max_steps=2)
    out = run_sweep(p, launcher="slurm", cluster=cluster, slurm={"time": 10})
    assert sorted(_metrics(out)) == ["a-s0", "b-s0"] and (out / "summary.md").exists()
    assert (out / ".submitit").is_dir()


def test_importing_submitit_through_guidetune_leaves_other_logging_handlers_open():
    """submitit's import-time dictConfig would shut down every handler of the process (it closed pytest's
    capture file through absl's handler once); guidetune imports it with SUBMITIT_LOG_LEVEL=NOCONFIG."""
    code = ("import io, logging, os, sys\n"
            "os.environ.pop('SUBMITIT_LOG_LEVEL', None)\n"
            "class Closing(logging.StreamHandler):\n"
            "    def close(self):\n"
            "        self.stream.close(); super().close()\n"
            "stream = io.StringIO(); logging.getLogger('x').addHandler(Closing(stream))\n"
            "from guidetune.sweep_exec import _submitit\n"
            "_submitit()\n"
            "print('closed' if stream.closed else 'open', os.environ['SUBMITIT_LOG_LEVEL'])\n")
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "open NOCONFIG", out.stderr[-2000:]


def test_workers_fork_only_on_linux_cpus(monkeypatch):
    from guidetune.sweep_exec import _start_method

    monkeypatch.setattr(sys, "platform", "linux")
    assert _start_method([None, None]) == "fork"  # CPU workers inherit the imports
    assert _start_method([0, 1]) == "spawn"  # CUDA state cannot cross a fork
    monkeypatch.setattr(sys, "platform", "darwin")
    assert _start_method([None, None]) == "spawn"
