"""Two CPU processes (gloo) through torchrun: every regularizer term works and is logged."""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config


CLI = str(Path(__file__).parent / "fixtures" / "cli_then_threads.py")  # guidetune.cli, then its threads


def assert_group_ended(stderr: str, processes: int = 2, threads: bool = True, cli: bool = True) -> None:
    """Every launched process got to the end of the command, left its process group and (``cli``: run
    through fixtures/cli_then_threads.py) ran its exit handlers, and (``threads``) no gloo thread was left (one that outlives the group can abort the process
    at shutdown, which the CLI skips for that reason; see guidetune.distributed.before_joining and
    cli._exit_launched)."""
    lines = [line for line in stderr.splitlines() if line.startswith("threads-after rank")]
    assert len(lines) == processes, stderr[-2000:]
    ran = sum(line.startswith("atexit ran rank") for line in stderr.splitlines())
    assert ran == (processes if cli else 0), stderr[-2000:]
    for line in lines if threads else []:
        assert "gloo" not in line, line


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
           "--master_port", str(_free_port()), CLI, "train", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # With DeepSpeed installed, the Trainer imports it after the group exists and it keeps a reference to it.
    assert_group_ended(proc.stderr, threads=importlib.util.find_spec("deepspeed") is None)
    run = tmp_path / "runs" / "ddp"
    meta = json.loads((run / "run.json").read_text())
    assert (meta["world_size"], meta["distributed"]) == (2, "MULTI_CPU")
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if "loss" in r]
    assert [r["step"] for r in train_logs] == [2, 4, 6]  # written once (main process), not once per process
    for r in train_logs:
        assert {"loss/task", "loss/l1", "loss/hoyer"} <= set(r)
    # 36 training rows shared by 2 processes: 18 each, 5 batches of 4 per epoch, so 6 steps = 1.2 epochs
    # (a single process would be at 6 / 9 = 0.67 epochs)
    assert train_logs[-1]["epoch"] == pytest.approx(1.2)
    assert "accuracy" in json.loads((run / "results.json").read_text())["metrics"]


def _launcher(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else shutil.which(name)


def _neuron_files(tmp_path):
    lines = ["the red car is fast", "algebra is fun", "nice day", "a red apple and algebra", "nothing here",
             "red is a colour", "we study algebra today", "blue sky"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{t} {i}" for i in range(3) for t in lines) + "\n")  # 24 sentences
    conc = tmp_path / "k.yaml"
    conc.write_text("c: [red]\nm: [algebra]\n")
    return corpus, conc


_COUNTS = ("sentences", "tokens", "general_sentences", "token_fires", "sentence_fires", "concept_sentences",
           "concept_fires", "general_fires", "act_max", "thresholds")


def _assert_same_stats(one: Path, two: Path):
    import numpy as np

    a, b = np.load(one / "stats_bert.npz"), np.load(two / "stats_bert.npz")
    for k in _COUNTS:  # counts exactly (max is order-free too)
        assert np.array_equal(a[k], b[k]), k
    np.testing.assert_allclose(b["act_sum"], a["act_sum"], rtol=1e-12)  # float64 sums, other order
    assert (one / "top_c.md").read_text() == (two / "top_c.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("launcher,quantile", [("torchrun", None), ("accelerate", "0.6")])
def test_two_process_neuron_scan_equals_one_process(tmp_path, tiny_dirs, launcher, quantile):
    """24 sentences in batches of 5: rank 0 counts batches 0, 2, 4, rank 1 batches 1, 3; all_reduce over gloo.
    With --quantile both processes calibrate on the same first sentences (calibration 200 > corpus)."""
    corpus, conc = _neuron_files(tmp_path)
    args = ["analyze", "neurons", str(tiny_dirs["bert"]), "--corpus", str(corpus), "--concepts", str(conc),
            "--layer", "encoder.layers.1.ffn.act", "--batch-size", "5", "--device", "cpu"]
    if quantile:
        args += ["--quantile", quantile]
    from guidetune.cli import main

    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    port = str(_free_port())
    if launcher == "torchrun":
        cmd = [_launcher("torchrun"), "--nproc_per_node", "2", "--master_port", port]
    else:
        cmd = [_launcher("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd + [CLI] + args + ["--out", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_group_ended(proc.stderr)
    assert proc.stdout.count("top c neurons") == 1  # printed (and written) once, by the main process
    _assert_same_stats(tmp_path / "one", tmp_path / "two")
    import json

    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    assert "processes" not in json.loads((tmp_path / "one" / "summary.json").read_text())
