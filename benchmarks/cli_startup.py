"""CLI start-up: wall time of ``guidetune --help``, ``guidetune ls`` and ``guidetune validate CONFIG``
against ``python -c pass`` (each a fresh process; median of N runs, interleaved).

    python benchmarks/cli_startup.py [--runs 5]

Prints one line per command (median seconds, and whether torch was imported) and ``ratio: X`` last:
the ``--help`` time over the bare interpreter's. Targets (issue 14): ``--help`` < 0.5 s, ``validate``
of a config that loads no model < 2 s. The full ``validate`` reads the model's config and tokenizer through
transformers (whose import alone imports torch); ``validate --quick`` checks the schema, plug-in parameters,
paths and output_dir without transformers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = "import runpy, sys; sys.argv = ['guidetune'] + sys.argv[1:]\ntry:\n    runpy.run_module('guidetune.cli', run_name='__main__')\nexcept SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr)"


def timed(argv: list[str]) -> tuple[float, bool]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, "NOTORCH" not in p.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    n = ap.parse_args().runs
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "d.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    cfg = tmp / "c.yaml"  # the packaged MiniLM: validate reads its config and tokenizer, no weights
    cfg.write_text(f"name: c\nmodel: {{name: minilm}}\ntask: {{name: classification, train: {data}, eval: {data}}}\n")
    py = [sys.executable]
    commands = {"python -c pass": py + ["-c", "pass"],
                "guidetune --help": py + ["-c", PROBE, "--help"],
                "guidetune ls": py + ["-c", PROBE, "ls"],
                "guidetune validate CONFIG": py + ["-c", PROBE, "validate", str(cfg)],
                "guidetune validate --quick CONFIG": py + ["-c", PROBE, "validate", "--quick", str(cfg)]}
    times: dict[str, list[float]] = {k: [] for k in commands}
    torch_loaded: dict[str, bool] = {}
    for _ in range(n):
        for k, argv in commands.items():
            t, loaded = timed(argv)
            times[k].append(t)
            torch_loaded[k] = loaded
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, t in med.items():
        extra = "" if k == "python -c pass" else f"  (torch imported: {'yes' if torch_loaded[k] else 'no'})"
        print(f"{k:34s} {t:7.3f} s{extra}")
    print(f"ratio: {med['guidetune --help'] / med['python -c pass']:.1f}")


if __name__ == "__main__":
    main()
