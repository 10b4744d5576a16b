"""Shared by the analyses: load a model or a run, stream a corpus, save figures atomically."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import GuidetuneError


def load_any(model_or_run: str, head: str = "encoder"):
    """(label, model, tokenizer): a run directory's fine-tuned model, or a model by name/path/alias."""
    from ..config import ModelSpec
    from ..models import load_model
    from ..runs import RunDir

    if RunDir(model_or_run).exists():
        from ..experiment import load_run

        _, _, model, tok = load_run(model_or_run)
        label = Path(model_or_run).name
    else:
        model, tok = load_model(ModelSpec(name=model_or_run, head=head))
        label = Path(model_or_run).name or model_or_run
    model.eval()
    return label, model, tok


def read_corpus(path: str, text_field: str = "text", label_field: str | None = "label") -> Iterator[tuple[int, str, object]]:
    """(line number, text, label or None), streamed: a text file (one sentence a line) or JSONL."""
    from ..tasks.base import data_path

    p = data_path(path, "--corpus")
    jsonl = p.suffix.lower() in (".jsonl", ".json")
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if not jsonl:
                yield i, line, None
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise GuidetuneError(f"{p}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict) or text_field not in rec:
                raise GuidetuneError(f"{p}:{i}: no '{text_field}' field (give --text-field to name it)")
            yield i, str(rec[text_field]), rec.get(label_field) if label_field else None


def batched(it, n: int):
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def save_fig(fig, path: Path) -> Path:
    """Write a matplotlib figure to ``path`` via a temporary file (atomic)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def save_npz(path: Path, **arrays) -> Path:
    """``numpy.savez`` through a temporary file (atomic)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path
