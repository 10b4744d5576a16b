"""Fisher files as a unit: ``X.safetensors`` (tensors), ``X.json`` (aggregates), optional plots and
reliability tables, and ``X.manifest.json`` written last.

Every file of a set is first written under a temporary name in the same directory and renamed into place;
the manifest -- the files with their sizes, a set id also stored in the safetensors metadata, and the inputs
(model, data file SHA-256, objective, N, seed, command) -- is removed before and written after, so a set
killed half-way has no manifest. Readers (``fisher_dropout``, ``analyze landscape``) refuse a Fisher file
without its manifest, or whose manifest belongs to another write.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import torch

from ..errors import GuidetuneError
from ..fisher_files import FORMAT, load, manifest_path  # noqa: F401  (load re-exported for readers)
from ..runs import atomic_write


def check_out(path: str | Path) -> Path:
    """``--out``: a file path whose directory can be created; one line otherwise (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise GuidetuneError(f"--out: '{path}' is a directory; give a file name such as {path / 'fisher.safetensors'}")
    if path.suffix != ".safetensors":
        raise GuidetuneError(f"--out: '{path}' must end in .safetensors")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise GuidetuneError(f"--out: '{parent}' is a file, so '{path}' cannot be created")
            break
    return path


def file_hash(path: str | Path) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FisherSet:
    """Collects the files of one output set under temporary names; ``commit`` renames them and writes the
    manifest last. Used as a context manager: on an exception the temporary files are removed."""

    def __init__(self, path: str | Path, inputs: dict):
        self.path = check_out(path)
        self.inputs = inputs
        self.set_id = uuid.uuid4().hex
        self.pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def tmp_for(self, final: Path) -> Path:
        tmp = final.with_name(f".{final.stem}.{self.set_id[:8]}.tmp{final.suffix}")
        self.pending.append((tmp, final))
        return tmp

    def write_text(self, final: Path, text: str) -> None:
        self.tmp_for(final).write_text(text)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path(self.path).unlink(missing_ok=True)  # the old set is incomplete from here on
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            for tmp, _ in self.pending:
                tmp.unlink(missing_ok=True)
            return False
        files = {}
        for tmp, final in self.pending:
            os.replace(tmp, final)
            files[final.name] = final.stat().st_size
        atomic_write(manifest_path(self.path), json.dumps(
            {"format": FORMAT, "set_id": self.set_id, "files": files, "inputs": self.inputs}, indent=1))
        return False


def save(path: str | Path, model, fisher: dict[str, torch.Tensor], meta: dict, out_set: FisherSet | None = None) -> Path:
    """``X.safetensors`` (tensors + metadata) and ``X.json`` (aggregates); with ``out_set`` they join that
    set (committed by the caller), else they are written as a set of their own with a manifest."""
    from safetensors.torch import save_file

    from .fisher_estimate import aggregates

    if out_set is None:
        inputs = {**meta, "command": " ".join(sys.argv)}
        with FisherSet(path, inputs) as s:
            return save(path, model, fisher, meta, s)
    path = out_set.path
    save_file({n: t.contiguous() for n, t in fisher.items()}, str(out_set.tmp_for(path)),
              metadata={"format": FORMAT, "set_id": out_set.set_id, **{k: str(v) for k, v in meta.items()}})
    out_set.write_text(path.with_suffix(".json"), json.dumps({"meta": meta, **aggregates(model, fisher)}, indent=1))
    return path
