"""The task protocol and the data plumbing tasks share (reading files, padding, batched prediction).

A task is a dataclass of its parameters, registered by name, that

* says which model head it needs (``head``) and how many labels (``num_labels``);
* turns its data into tokenized feature dicts (``dataset(split)``) after ``setup(tokenizer)``;
* pads a list of features into a batch (``collate``); keys starting with ``gt_`` are guidetune's own
  (token indices for regularizers) and are removed before the model's forward;
* scores a model on a split (``evaluate``), returning flat ``{metric: float}``.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import GuidetuneError
from ..registry import Registry

TASKS: Registry[type] = Registry("task")
PACKAGE_PREFIX = "guidetune:"


@runtime_checkable
class Task(Protocol):
    head: str

    def setup(self, tokenizer) -> None: ...

    def num_labels(self) -> int | None: ...

    def dataset(self, split: str) -> Sequence[dict]: ...

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]: ...

    def evaluate(self, model, split: str = "eval", batch_size: int = 64) -> dict[str, float]: ...


def data_path(path: str, field_name: str) -> Path:
    """A data file path; ``guidetune:demo/x.jsonl`` points into the package's own data directory."""
    if path.startswith(PACKAGE_PREFIX):
        p = Path(str(resources.files("guidetune") / "data" / path[len(PACKAGE_PREFIX):]))
    else:
        p = Path(path).expanduser()
    if not p.exists():
        raise GuidetuneError(f"{field_name}: file not found '{path}'")
    return p


def read_records(path: Path, delimiter: str | None = None) -> list[tuple[int, dict]]:
    """(line number, record) pairs from JSONL, CSV or TSV (by extension unless ``delimiter`` given)."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")  # tolerate a UTF-8 BOM
    if suffix in (".jsonl", ".json") and delimiter is None:
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise GuidetuneError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise GuidetuneError(f"{path}:{i}: expected a JSON object per line, got {type(rec).__name__}")
            out.append((i, rec))
        return out
    if delimiter is None:
        delimiter = "\t" if suffix == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    out = []
    for rec in reader:
        if None in rec:  # more cells than header columns
            raise GuidetuneError(f"{path}:{reader.line_num}: {len(reader.fieldnames) + len(rec[None])} columns, "
                                 f"the header has {len(reader.fieldnames)}")
        out.append((reader.line_num, rec))
    return out


def need(rec: dict, key: str, path: Path, line: int) -> Any:
    """``rec[key]``, or a one-line error naming the file, line and the missing column."""
    if key not in rec or rec[key] is None:
        cols = ", ".join(k for k in rec if k is not None)
        raise GuidetuneError(f"{path}:{line}: missing column '{key}' (columns here: {cols})")
    return rec[key]


def eos_index(input_ids: list[int], tokenizer) -> int:
    """Index of the last EOS/SEP token, else of the last token."""
    ids = {i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id) if i is not None}
    for j in range(len(input_ids) - 1, -1, -1):
        if input_ids[j] in ids:
            return j
    return len(input_ids) - 1


def pad_batch(tokenizer, features: list[dict]) -> dict[str, torch.Tensor]:
    """Pad token fields with the tokenizer; stack every other field (labels, ``gt_*`` indices)."""
    token_keys = ("input_ids", "attention_mask", "token_type_ids")
    tok = [{k: f[k] for k in token_keys if k in f} for f in features]
    batch = dict(tokenizer.pad(tok, return_tensors="pt"))
    for key in features[0]:
        if key in token_keys:
            continue
        values = [f[key] for f in features]
        if isinstance(values[0], list):  # e.g. seq2seq labels: pad with -100
            n = max(len(v) for v in values)
            values = [v + [-100] * (n - len(v)) for v in values]
        batch[key] = torch.tensor(values)
    return batch


def strip_extras(batch: dict) -> tuple[dict, dict]:
    """Split a batch into model inputs and guidetune's ``gt_*`` extras."""
    model_inputs = {k: v for k, v in batch.items() if not k.startswith("gt_")}
    extras = {k: v for k, v in batch.items() if k.startswith("gt_")}
    return model_inputs, extras


@torch.no_grad()
def predict(model, features: Sequence[dict], collate: Callable, batch_size: int,
            fn: Callable | None = None) -> list:
    """Run ``model`` over ``features`` in length-sorted batches (less padding); results in input order.

    ``fn(outputs, batch) -> [batch] tensor or list`` picks what to keep (default: the logits).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    results: list = [None] * len(features)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([features[i] for i in idx])
        inputs, _ = strip_extras(batch)
        inputs = {k: v.to(device) for k, v in inputs.items() if k != "labels"}
        out = model(**inputs)
        kept = fn(out, batch) if fn else out.logits.float().cpu()
        for j, i in enumerate(idx):
            results[i] = kept[j]
    model.train(was_training)
    return results
