"""Fisher of MiniLM on 512 samples with 2 processes (torchrun, gloo, CPU) vs 1: equal estimates, time ratio.

    python benchmarks/fisher_processes.py [--samples 512] [--threads 1]

Both runs are the ``guidetune fisher`` CLI (``task`` objective, demo sentiment sentences, batch 32), each
process with ``--threads`` intra-op threads. Agreement: the largest relative difference between the two
files (values below 1e-12 of the largest compared at that floor); target <= 1e-6. ``ratio:`` = wall time
of 2 processes / 1 process (start-up and model loading included).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import demo_texts, header


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from safetensors.torch import load_file

    header(f"Fisher on 2 processes vs 1 (MiniLM, {a.samples} samples, {a.threads} thread(s) per process)")
    tmp = Path(tempfile.mkdtemp())
    texts = demo_texts()
    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps({"text": texts[i % len(texts)], "label": i % 2}) + "\n" for i in range(a.samples)))
    args = ["fisher", "minilm", "--data", str(data), "--objective", "task", "--device", "cpu", "--batch-size", "32"]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    runs = {"1": [sys.executable, "-m", "guidetune.cli"],
            "2": [str(torchrun) if torchrun.exists() else shutil.which("torchrun"), "--nproc_per_node", "2",
                  "--master_port", str(_port()), "-m", "guidetune.cli"]}
    times = {}
    for k, pre in runs.items():
        t0 = time.perf_counter()
        proc = subprocess.run([*pre, *args, "--out", str(tmp / f"p{k}.safetensors")], env=env, capture_output=True, text=True)
        times[k] = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(proc.stderr[-2000:])
    f1, f2 = load_file(str(tmp / "p1.safetensors")), load_file(str(tmp / "p2.safetensors"))
    top = max(float(v.max()) for v in f1.values())
    diff = max(float(((f2[n].double() - f1[n].double()).abs() / f1[n].double().abs().clamp_min(1e-12 * top)).max())
               for n in f1)
    shutil.rmtree(tmp)
    print(f"1 process:   {times['1']:.1f} s")
    print(f"2 processes: {times['2']:.1f} s")
    print(f"max relative difference: {diff:.2e}  target <= 1e-6: {'met' if diff <= 1e-6 else 'MISSED'}")
    print(f"ratio: {times['2'] / times['1']:.2f}")


if __name__ == "__main__":
    main()
