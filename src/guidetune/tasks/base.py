"""The task protocol and the data plumbing tasks share (reading files, padding, batched prediction).

A task is a dataclass of its parameters, registered by name, that

* says which model head it needs (``head``) and how many labels (``num_labels``);
* turns its data into tokenized feature dicts (``dataset(split)``) after ``setup(tokenizer)``;
* pads a list of features into a batch (``collate``); keys starting with ``gt_`` are guidetune's own
  (token indices for regularizers) and are removed before the model's forward;
* scores a model on a split (``evaluate``), returning flat ``{metric: float}``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .. import records
from ..errors import GuidetuneError
from ..registry import Registry

TASKS: Registry[type] = Registry("task")
PACKAGE_PREFIX = records.PACKAGE_PREFIX


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
    return records.resolve(path, field_name)


def read_records(path: Path, delimiter: str | None = None, encoding: str = "utf-8") -> list[tuple[int, dict]]:
    """(line number, record) pairs of a CSV/TSV/JSONL/JSON file (see :mod:`guidetune.records`)."""
    return [(r.line, r.values) for r in records.read_table(path, str(path), encoding, delimiter)]


def need(rec: dict, key: str, path: Path, line: int) -> Any:
    """``rec[key]``, or a one-line error naming the file, line and the missing or null field."""
    if key not in rec:
        cols = ", ".join(k for k in rec if k is not None)
        raise GuidetuneError(f"{path}:{line}: missing field '{key}' (fields here: {cols})")
    if rec[key] is None:
        raise GuidetuneError(f"{path}:{line}: field '{key}' is null")
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
