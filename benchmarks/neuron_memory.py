"""Peak memory of `guidetune analyze neurons` at 1,000 and 100,000 synthetic sentences (MiniLM).

    python benchmarks/neuron_memory.py [--large 100000]

Each size runs the real CLI in its own process; peak resident memory is its ru_maxrss. Streaming
counters should keep them equal within 10%. ``ratio:`` = peak(large) / peak(1,000).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import header

WORDS = ("the a science red blue country france japan physics algebra cat dog house river tree stone "
         "computer green yellow india engine").split()


def peak(n: int, tmp: Path) -> float:
    corpus = tmp / f"c{n}.txt"
    rng = random.Random(n)
    with open(corpus, "w") as f:
        for _ in range(n):
            f.write(" ".join(rng.choices(WORDS, k=rng.randint(6, 16))) + "\n")
    cmd = [sys.executable, "-c", "import resource, sys; from guidetune.cli import main; rc = main(sys.argv[1:]); "
           "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
           "analyze", "neurons", "minilm", "--corpus", str(corpus), "--out", str(tmp / f"o{n}"), "--batch-size", "128"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return int(out.stdout.split("PEAK")[1].split()[0]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", type=int, default=100_000)
    a = ap.parse_args()
    header(f"analyze neurons peak memory: 1,000 vs {a.large:,} sentences (MiniLM)")
    with tempfile.TemporaryDirectory() as tmp:
        small = peak(1000, Path(tmp))
        large = peak(a.large, Path(tmp))
    print(f"1,000 sentences:   {small:.0f} MiB peak")
    print(f"{a.large:,} sentences: {large:.0f} MiB peak")
    print(f"ratio: {large / small:.3f}")


if __name__ == "__main__":
    main()
