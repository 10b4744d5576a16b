"""Peak memory of `guidetune fisher` at N = 256 and N = 4,096 samples (synthetic sentences), MiniLM.

    python benchmarks/fisher_memory.py

Each size runs the real CLI in its own process; peak resident memory is that process's ru_maxrss.
Streaming accumulation should make them equal within 10%. ``ratio:`` = peak(4096) / peak(256).
"""
from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import header

WORDS = "the a cat dog runs sits quickly slowly over under big small red blue house tree river stone".split()


def peak(n: int, tmp: Path) -> float:
    data = tmp / f"d{n}.jsonl"
    rng = random.Random(n)
    data.write_text("".join(json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(6, 20))),
                                        "label": i % 2}) + "\n" for i in range(n)))
    cmd = [sys.executable, "-c", "import resource, sys; from guidetune.cli import main; rc = main(sys.argv[1:]); "
           "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
           "fisher", "minilm", "--data", str(data), "--objective", "task", "--max-samples", str(n),
           "--out", str(tmp / f"f{n}.safetensors")]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return int(out.stdout.split("PEAK")[1].split()[0]) / 1024  # MiB (ru_maxrss is KiB on Linux)


def main() -> None:
    header("Fisher peak memory: N = 256 vs N = 4,096 (MiniLM, task objective)")
    with tempfile.TemporaryDirectory() as tmp:
        small = peak(256, Path(tmp))
        large = peak(4096, Path(tmp))
    print(f"N = 256:   {small:.0f} MiB peak")
    print(f"N = 4096:  {large:.0f} MiB peak")
    print(f"ratio: {large / small:.3f}")


if __name__ == "__main__":
    main()
