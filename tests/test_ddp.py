"""Two CPU processes (gloo) through torchrun: every regularizer term works and is logged."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run_finishes_with_terms_and_results(tmp_path, tiny_dirs, cls_data):
    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="ddp",
                      regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]},
                                    {"name": "hoyer", "weight": 0.01, "layers": ["encoder.layers.0.ffn.act"]}])
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else shutil.which("torchrun"), "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "guidetune.cli", "train", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    meta = json.loads((run / "run.json").read_text())
    assert meta["world_size"] == 2
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if "loss" in r]
    assert [r["step"] for r in train_logs] == [2, 4, 6]  # written once (main process), not once per process
    for r in train_logs:
        assert {"loss/task", "loss/l1", "loss/hoyer"} <= set(r)
    # 36 training rows shared by 2 processes: 18 each, 5 batches of 4 per epoch, so 6 steps = 1.2 epochs
    # (a single process would be at 6 / 9 = 0.67 epochs)
    assert train_logs[-1]["epoch"] == pytest.approx(1.2)
    assert "accuracy" in json.loads((run / "results.json").read_text())["metrics"]
