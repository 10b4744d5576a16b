"""`guidetune sweep --workers 2` vs `--workers 1`: the same 4 tiny runs, wall time and results.

    python benchmarks/sweep_workers.py [--steps 150]

A tiny BERT (2 layers, hidden 32) classification sweep: 2 variants x 2 seeds, ``l1`` on the final layer,
each run ``--steps`` optimizer steps plus its evaluation. Both sweeps run the real CLI in a fresh
process with OMP_NUM_THREADS=1 per run (the pool gives each of the 2 workers one of the 2 cores), into
separate output directories. The results.json metrics must be identical. ``ratio:`` = wall(2) / wall(1).
Runs of 150 steps (a few seconds each): with 30-step runs (about 1 s each) the sweep process's own start-up
(~5 s of imports) and its summary, paid once in both modes, bound the ratio at about 0.8 however well the
runs parallelize.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import header


def setup(tmp: Path, steps: int) -> None:
    from guidetune.testing import save_tiny

    save_tiny("bert", tmp / "tiny", head="classification")
    pos = ["great fun", "lovely day", "really good", "very nice work", "happy and bright", "a wonderful gift"]
    neg = ["awful mess", "terrible day", "really bad", "very poor work", "sad and dull", "a horrible gift"]
    rows = [{"text": t, "label": "pos"} for t in pos] + [{"text": t, "label": "neg"} for t in neg]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    base = {"name": "base", "seed": 0, "output_dir": str(tmp / "runs"),
            "model": {"name": str(tmp / "tiny"), "head": "classification"},
            "task": {"name": "classification", "train": str(tmp / "train.jsonl"), "eval": str(tmp / "train.jsonl"),
                     "max_length": 16},
            "train": {"max_steps": steps, "lr": 1e-3, "batch_size": 8, "logging_steps": 10, "save_steps": 10},
            "regularizers": [{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]}]}
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    for name in ("w1", "w2"):
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(
            {"base": "base.yaml", "name": name, "seeds": [0, 1],
             "variants": [{"label": "a"}, {"label": "b", "set": {"train.lr": 3e-4}}]}))


def sweep(tmp: Path, name: str, workers: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "guidetune.cli", "sweep", str(tmp / f"{name}.yaml"),
                          "--workers", str(workers)], capture_output=True, text=True, env=env, cwd=tmp)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return time.perf_counter() - t0


def metrics(out: Path) -> dict:
    return {d.name: json.loads((d / "results.json").read_text())["metrics"] for d in sorted(out.iterdir())
            if (d / "results.json").exists()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    a = ap.parse_args()
    header(f"guidetune sweep --workers 2 vs 1: 4 tiny-BERT runs of {a.steps} steps, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        setup(tmp, a.steps)
        one = sweep(tmp, "w1", 1)
        two = sweep(tmp, "w2", 2)
        m1, m2 = metrics(tmp / "runs" / "w1"), metrics(tmp / "runs" / "w2")
    if len(m1) != 4 or m1 != m2:
        raise SystemExit(f"results differ: {m1} vs {m2}")
    print(f"--workers 1: {one:.1f} s; --workers 2: {two:.1f} s; results.json metrics identical ({len(m1)} runs)")
    print(f"ratio: {two / one:.3f}")


if __name__ == "__main__":
    main()
