"""``classification``: text or text-pair classification (or regression) from JSONL/CSV/TSV or GLUE directories."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import GuidetuneError
from ..evaluation.metrics import classification_metrics, mcc, regression_metrics
from ..spec import check, finish
from . import glue
from .. import records
from .glue import LAYOUTS
from .base import TASKS, eos_index, pad_batch, predict

FIELDS = ("text", "text_pair", "label")


@TASKS.register("classification")
@dataclass
class Classification:
    """Text (or text pair) -> label or score, from CSV/JSONL/TSV files or a GLUE directory.

    Files are read by :mod:`guidetune.records` (``fields``, ``label_map``, ``encoding``). Labels may be
    strings (mapped to ids in sorted order, or by ``label_map``) or ints. Metrics (scikit-learn / scipy):
    accuracy and macro-F1; for two classes also F1 of the positive class (``positive_label``, default
    the second label in sorted order); Matthews correlation for CoLA; Pearson and Spearman for
    regression (``regression: true`` or STS-B). ``glue_task`` + ``glue_dir`` read the standard GLUE
    layouts (train.tsv / dev.tsv) instead of ``train`` / ``eval``.
    """

    train: str = field(default="guidetune:demo/sentiment_train.jsonl", metadata={"help": "training file"})
    eval: str = field(default="guidetune:demo/sentiment_eval.jsonl", metadata={"help": "evaluation file"})
    text_field: str = "text"
    text_pair_field: str | None = field(default=None, metadata={"help": "second text column for pairs"})
    label_field: str = "label"
    max_length: int = field(default=128, metadata={"help": "truncate inputs to this many tokens"})
    positive_label: str | None = field(default=None, metadata={"help": "positive class for binary F1"})
    limit: int = field(default=0, metadata={"help": "use only the first N examples per split (0: all)"})
    regression: bool = field(default=False, metadata={"help": "a real-valued score instead of classes"})
    glue_task: Literal["rte", "mrpc", "cola", "stsb", "sst2", "qnli", "qqp"] | None = field(
        default=None, metadata={"help": "read a GLUE directory in this task's layout"})
    glue_dir: str | None = field(default=None, metadata={"help": "directory with train.tsv and dev.tsv"})
    fields: dict[str, str] | None = field(default=None, metadata={
        "help": "task field -> file field, e.g. {text: premise, text_pair: hypothesis, label: gold}"})
    label_map: dict[str, int] | None = field(default=None, metadata={
        "help": "string label -> class id, e.g. {entailment: 0, not_entailment: 1}"})
    encoding: str = field(default="utf-8", metadata={"help": "text encoding of the files (e.g. cp1252)"})

    head = "classification"

    def __post_init__(self):
        e: list[str] = []
        check(e, self.max_length > 1, f"max_length: must be > 1, got {self.max_length}")
        check(e, self.limit >= 0, f"limit: must be >= 0, got {self.limit}")
        check(e, (self.glue_task is None) == (self.glue_dir is None), "glue_dir: give glue_task and glue_dir together")
        records.check_mapping(self.fields, FIELDS, e)
        if self.label_map is not None:
            ids = list(self.label_map.values())
            check(e, all(isinstance(v, int) and not isinstance(v, bool) for v in ids)
                  and sorted(set(ids)) == list(range(len(set(ids)))),
                  f"label_map: values must be the class ids 0..N-1, got {sorted(set(map(str, ids)))}")
        finish(e)
        if self.glue_task:
            self.regression = self.regression or LAYOUTS[self.glue_task].regression
        self._rows: dict[str, list[tuple[str, str | None, str]]] = {}
        self._features: dict[str, list[dict]] = {}
        self.labels: list[str] = []
        self.predictions: list[dict] = []
        self.tokenizer = None

    def _read(self, split: str) -> list[tuple[str, str | None, str]]:
        if split not in self._rows:
            if self.glue_task:
                layout = LAYOUTS[self.glue_task]
                table = glue.read(glue.split_file(self.glue_dir, self.glue_task, split), layout, self.encoding)
                wanted = glue.columns(table, layout)
            else:
                path = {"train": self.train, "eval": self.eval}[split]
                table = records.read_table(path, f"task.{split}", self.encoding)
                wanted = {"text": self.text_field, "label": self.label_field}
                if self.text_pair_field or (self.fields and "text_pair" in self.fields):
                    wanted["text_pair"] = self.text_pair_field or ""
            fm = records.FieldMap(table, wanted, self.fields, label_map=self.label_map)
            names, glue_file = self._label_names(), bool(self.glue_task)
            rows = []
            for rec in table:
                text = fm.text(rec, "text", allow_empty=glue_file)  # GLUE's QQP has a few empty questions
                pair = fm.text(rec, "text_pair", allow_empty=glue_file) if fm.has("text_pair") else None
                label = fm.label(rec, "label")
                rows.append((text, pair, names[label] if names else str(label).strip()))
            self._rows[split] = rows[: self.limit] if self.limit else rows
        return self._rows[split]

    def _label_names(self) -> list[str] | None:
        """Class names by id under ``label_map`` (the first label mapped to each id), else None."""
        if not self.label_map or self.regression:
            return None
        names: dict[int, str] = {}
        for k, v in self.label_map.items():
            names.setdefault(v, str(k))
        return [names[i] for i in range(len(names))]

    @property
    def problem_type(self) -> str | None:
        return "regression" if self.regression else None

    def _label_list(self) -> list[str]:
        if self.regression:
            return ["score"]
        if self._label_names():
            return self._label_names()
        labels = sorted({r[2] for r in self._read("train")})
        if all(lab.lstrip("-").isdigit() for lab in labels):
            labels = sorted(labels, key=int)
        return labels

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.labels = self._label_list()
        self._features = {}

    def num_labels(self) -> int:
        return len(self.labels or self._label_list())

    def dataset(self, split: str) -> list[dict]:
        if split not in self._features:
            ids = {lab: i for i, lab in enumerate(self.labels)}
            rows = self._read(split)
            unknown = [] if self.regression else sorted({r[2] for r in rows if r[2] not in ids})
            if unknown:
                raise GuidetuneError(f"task.{split}: labels {unknown[:5]} do not occur in the training file; "
                                     f"known: {', '.join(self.labels)}")
            texts = [r[0] for r in rows]
            pairs = [r[1] for r in rows] if rows and rows[0][1] is not None else None
            enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
            feats = []
            for i, r in enumerate(rows):
                f = {k: enc[k][i] for k in enc.keys()}
                f["labels"] = _score(r[2], split) if self.regression else ids[r[2]]
                f["gt_eos_index"] = eos_index(f["input_ids"], self.tokenizer)
                feats.append(f)
            self._features[split] = feats
        return self._features[split]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(self.tokenizer, features)

    def evaluate(self, model, split: str = "eval", batch_size: int = 64) -> dict[str, float]:
        feats = self.dataset(split)
        logits = predict(model, feats, self.collate, batch_size)
        gold = [f["labels"] for f in feats]
        rows = self._read(split)
        if self.regression:
            scores = [float(x[0]) for x in logits]
            self.predictions = [{"text": r[0], "text_pair": r[1], "gold": g, "pred": p}
                                for r, g, p in zip(rows, gold, scores)]
            return regression_metrics(gold, scores)
        preds = [int(x.argmax()) for x in logits]
        self.predictions = [{"text": r[0], "text_pair": r[1], "gold": self.labels[g], "pred": self.labels[p],
                             "logits": [round(float(v), 6) for v in x]}
                            for r, g, p, x in zip(rows, gold, preds, logits)]
        pos = self.labels.index(self.positive_label) if self.positive_label in self.labels else len(self.labels) - 1
        out = classification_metrics(gold, preds, num_labels=len(self.labels), positive=pos)
        if self.glue_task and "mcc" in LAYOUTS[self.glue_task].metrics:
            out["mcc"] = mcc(gold, preds)
        return out


def _score(value: str, split: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise GuidetuneError(f"task.{split}: regression needs numeric scores, got {value!r}") from None
