"""The standard GLUE TSV layouts (as distributed by the GLUE benchmark) for the ``classification`` task.

GLUE TSVs are read by :mod:`guidetune.records` without quote processing (sentences contain bare
quotes); a UTF-8 BOM (MRPC) is dropped; a row with the wrong number of columns is an error naming the
file and line; ``encoding``, ``fields`` and ``label_map`` of the task apply as to any file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import records
from ..errors import GuidetuneError


@dataclass(frozen=True)
class Layout:
    header: bool
    columns: int | None  # expected columns (None: as many as the header)
    text: str | int
    pair: str | int | None
    label: str | int
    regression: bool = False
    metrics: tuple[str, ...] = ("accuracy",)


LAYOUTS = {
    "rte": Layout(True, 4, "sentence1", "sentence2", "label"),
    "mrpc": Layout(True, 5, "#1 String", "#2 String", "Quality", metrics=("accuracy", "f1")),
    "cola": Layout(False, 4, 3, None, 1, metrics=("accuracy", "mcc")),
    "stsb": Layout(True, 10, "sentence1", "sentence2", -1, regression=True, metrics=("pearson", "spearman")),
    "sst2": Layout(True, 2, "sentence", None, "label"),
    "qnli": Layout(True, 4, "question", "sentence", "label"),
    "qqp": Layout(True, 6, "question1", "question2", "is_duplicate", metrics=("accuracy", "f1")),
}
SPLITS = {"train": ("train.tsv",), "eval": ("dev.tsv", "dev_matched.tsv")}


def split_file(directory: str, task: str, split: str) -> Path:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise GuidetuneError(f"task.glue_dir: no such directory '{directory}'")
    for name in SPLITS[split]:
        if (d / name).is_file():
            return d / name
    raise GuidetuneError(f"task.glue_dir: '{directory}' has no {' or '.join(SPLITS[split])} "
                         f"(a GLUE {task.upper()} directory holds train.tsv and dev.tsv)")


def read(path: Path, layout: Layout, encoding: str = "utf-8") -> records.Table:
    """The records of a GLUE TSV (no quote processing; CoLA's columns are named 0, 1, 2, 3)."""
    table = records.read_table(path, str(path), encoding, delimiter="\t", quoting="none", header=layout.header)
    if layout.columns and len(table.fields) != layout.columns:
        raise GuidetuneError(f"{path}:1: {len(table.fields)} columns, a GLUE file of this task has {layout.columns}")
    return table


def columns(table: records.Table, layout: Layout) -> dict[str, str]:
    """The layout's text / text_pair / label columns as field names of ``table``."""
    def name(key):
        return table.fields[key] if isinstance(key, int) else key

    out = {"text": name(layout.text), "label": name(layout.label)}
    if layout.pair is not None:
        out["text_pair"] = name(layout.pair)
    return out
