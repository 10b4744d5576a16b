"""Shared by the analyses: load a model or a run, stream a corpus, save figures atomically."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import GuidetuneError


def load_any(model_or_run: str, head: str = "encoder", device: str | None = "cpu", dtype: str | None = None,
             device_map: str | None = None, trust_remote_code: bool = False, allow_pickle: bool = False):
    """(label, model, tokenizer): a run directory's fine-tuned model, or a model by name/path/alias.

    ``trust_remote_code``/``allow_pickle`` come from the caller's command line only, never from a run.

    The model is placed by :func:`guidetune.devices.place` (``device``: auto | cpu | cuda | cuda:N;
    ``dtype``: float32 | bfloat16 | float16). ``device_map="auto"`` instead spreads a model that does
    not fit one GPU over the GPUs and the CPU through accelerate (model names only, not run directories).
    """
    from ..config import ModelSpec
    from ..devices import place
    from ..models import load_model
    from ..runs import RunDir

    if RunDir(model_or_run).exists():
        if device_map:
            raise GuidetuneError(f"--device-map: '{device_map}' works for model names and paths, not for the run "
                                 f"directory '{model_or_run}'; give its model/ directory or drop --device-map")
        from ..experiment import load_run

        _, _, model, tok = load_run(model_or_run, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        label = Path(model_or_run).name
    else:
        model, tok = load_model(ModelSpec(name=model_or_run, head=head, trust_remote_code=trust_remote_code,
                                          allow_pickle=allow_pickle), device_map=device_map,
                                dtype=dtype if device_map else None)
        label = Path(model_or_run).name or model_or_run
    model, _ = place(model, device, dtype)
    model.eval()
    return label, model, tok


def model_device(model):
    """The device of the model's input embeddings (where batches go; also right under ``device_map``)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def read_corpus(path: str, text_field: str = "text", label_field: str | None = "label",
                encoding: str = "utf-8") -> Iterator[tuple[int, str, object]]:
    """(line number, text, label or None): a text file (one sentence a line, streamed), or CSV/TSV/JSONL/JSON.

    Structured files go through :mod:`guidetune.records` (``text_field`` names the text; a null or
    missing one is an error at file:line); blank lines of a text file are skipped.
    """
    from .. import records

    p = records.require_file(path, "--corpus")
    if p.suffix.lower() in (*records.DELIMITED, *records.JSON_LINES, ".json"):
        table = records.read_table(p, "--corpus", encoding)
        fm = records.FieldMap(table, {"text": text_field, "label": label_field or ""}, optional=("label",),
                             hint="give --text-field to name the text field")
        for rec in table:
            text = fm.text(rec, "text", allow_empty=True)
            if text.strip():
                yield rec.line, text.strip(), rec.values.get(fm.names["label"]) if fm.has("label") else None
        return
    seen = False
    for i, line in records.read_lines(p, "--corpus", encoding):
        if line.strip():
            seen = True
            yield i, line.strip(), None
    if not seen:
        raise GuidetuneError(f"--corpus: the corpus is empty ({p} has no text, only blank lines)")


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
