"""The standard GLUE TSV layouts (as distributed by the GLUE benchmark) for the ``classification`` task.

GLUE TSVs are read without quote processing (sentences contain bare quotes); a UTF-8 BOM (MRPC) is
dropped; a row with the wrong number of columns is an error naming the file and line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def read(path: Path, layout: Layout) -> list[tuple[str, str | None, str]]:
    """(text, pair, label) rows of a GLUE TSV."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t") if layout.header else None
    width = layout.columns or len(header)

    def col(cells, key):
        return cells[header.index(key)] if isinstance(key, str) else cells[key]

    if header is not None:
        missing = [k for k in (layout.text, layout.pair, layout.label) if isinstance(k, str) and k not in header]
        if missing:
            raise GuidetuneError(f"{path}:1: header has no column '{missing[0]}' (columns: {', '.join(header)})")
    rows = []
    for i, line in enumerate(lines[1 if layout.header else 0:], start=2 if layout.header else 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != width:
            raise GuidetuneError(f"{path}:{i}: {len(cells)} columns, expected {width}")
        rows.append((col(cells, layout.text), col(cells, layout.pair) if layout.pair is not None else None,
                     col(cells, layout.label)))
    return rows
