"""``seq2seq``: text-to-text (e.g. summarization); teacher-forced training; ROUGE on generations.

Rows (CSV/TSV/JSONL/JSON, read by :mod:`guidetune.records`) hold ``source`` and ``target`` (other
names through ``fields: {source: article, target: abstract}``); ``prefix`` is prepended to every
source (T5 style, e.g. ``"summarize: "``). A row whose source or target is null or empty is an error
naming file:line:column, unless ``empty: skip`` (then it is left out and counted in ``skipped_rows``).

Sources longer than ``max_source_length`` (clamped to the model's positions) are cut, keeping their
start; training targets longer than ``max_target_length`` are cut too. Both are counted and logged
(``truncated_sources``, ``truncated_targets``). ROUGE is always computed against the **full**
reference text of the file, never against the cut training target.

Training is teacher-forced through the GuidedTrainer, so every regularizer works with it. Evaluation
generates with beam search (``num_beams``, ``max_new_tokens``) in length-sorted batches and scores
ROUGE-1/2/L F-measures with Google's ``rouge-score`` package.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch

from .. import records
from ..evaluation.metrics import rouge
from ..evaluation.scoring import effective_limit
from ..spec import check, finish
from .base import TASKS, pad_batch

log = logging.getLogger(__name__)
FIELDS = ("source", "target")


@TASKS.register("seq2seq")
@dataclass
class Seq2Seq:
    """Source -> target text; ROUGE-1/2/L of beam-search generations."""

    train: str = field(default="", metadata={"help": "CSV/TSV/JSONL/JSON with source and target"})
    eval: str = field(default="", metadata={"help": "CSV/TSV/JSONL/JSON with source and target"})
    source_field: str = "source"
    target_field: str = "target"
    prefix: str = field(default="", metadata={"help": "prepended to every source, e.g. 'summarize: '"})
    max_source_length: int = 512
    max_target_length: int = 128
    num_beams: int = 4
    max_new_tokens: int = 128
    limit: int = field(default=0, metadata={"help": "use only the first N rows per split (0: all)"})
    empty: Literal["error", "skip"] = field(default="error", metadata={
        "help": "a null or empty source/target: stop with file:line, or skip the row (counted)"})
    fields: dict[str, str] | None = field(default=None, metadata={"help": "task field -> file field, e.g. "
                                                                          "{source: article, target: abstract}"})
    encoding: str = field(default="utf-8", metadata={"help": "text encoding of the files (e.g. cp1252)"})

    head = "seq2seq_lm"

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.train) or bool(self.eval), "train: give a training and/or an evaluation file")
        check(e, self.num_beams >= 1, f"num_beams: must be >= 1, got {self.num_beams}")
        check(e, self.max_new_tokens >= 1, f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        check(e, self.max_source_length > 1, f"max_source_length: must be > 1, got {self.max_source_length}")
        check(e, self.max_target_length > 1, f"max_target_length: must be > 1, got {self.max_target_length}")
        records.check_mapping(self.fields, FIELDS, e)
        finish(e)
        self.tokenizer = None
        self.source_limit = self.max_source_length
        self.predictions: list[dict] = []
        self.counts: dict[str, dict[str, int]] = {}
        self._rows: dict[str, list[tuple[str, str, str]]] = {}

    def num_labels(self) -> None:
        return None

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def bind_model(self, model) -> None:
        """Clamp ``max_source_length`` to the model's positions (BART: 1024; T5 has no hard limit)."""
        self.source_limit = effective_limit(model, self.max_source_length) or self.max_source_length

    def rows(self, split: str) -> list[tuple[str, str, str]]:
        """(source, full target, file:line) rows of a split."""
        if split not in self._rows:
            path = self.train if split == "train" else self.eval
            table = records.read_table(path, f"task.{split}", self.encoding)
            fm = records.FieldMap(table, {"source": self.source_field, "target": self.target_field}, self.fields)
            rows, skipped = [], 0
            for rec in table:
                if self.empty == "skip" and (fm.missing(rec, "source") or fm.missing(rec, "target")):
                    skipped += 1
                    continue
                rows.append((fm.text(rec, "source"), fm.text(rec, "target"), rec.where()))
            if skipped:
                log.warning("seq2seq %s: skipped %d rows with a null or empty source/target (empty: skip)", split,
                            skipped)
            self._rows[split] = rows[: self.limit] if self.limit else rows
            self.counts.setdefault(split, {})["skipped_rows"] = skipped
        return self._rows[split]

    def dataset(self, split: str) -> list[dict]:
        tok, feats = self.tokenizer, []
        cut_src = cut_tgt = 0
        for src, tgt, _ in self.rows(split):
            enc = tok(self.prefix + src)
            if len(enc["input_ids"]) > self.source_limit:
                cut_src += 1
                enc = tok(self.prefix + src, truncation=True, max_length=self.source_limit)
            labels = tok(tgt)["input_ids"]
            if len(labels) > self.max_target_length:
                cut_tgt += 1
                labels = tok(tgt, truncation=True, max_length=self.max_target_length)["input_ids"]
            feats.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
        self._count(split, truncated_sources=cut_src, truncated_targets=cut_tgt)
        return feats

    def _count(self, split: str, **counts: int) -> None:
        self.counts.setdefault(split, {}).update(counts)
        said = {k: v for k, v in counts.items() if v}
        if said:
            log.warning("seq2seq %s: %s (limits: source %d, target %d tokens)", split,
                        ", ".join(f"{k} {v}" for k, v in said.items()), self.source_limit, self.max_target_length)

    def describe(self) -> dict:
        return {f"{split}_{k}": v for split, c in self.counts.items() for k, v in c.items()}

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(self.tokenizer, features)

    @torch.no_grad()
    def generate(self, model, sources: list[str], batch_size: int = 16) -> list[str]:
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out: list[str] = [""] * len(sources)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            enc = self.tokenizer([self.prefix + sources[j] for j in idx], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.source_limit).to(dev)
            gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)
            for j, text in zip(idx, self.tokenizer.batch_decode(gen, skip_special_tokens=True)):
                out[j] = text.strip()
        model.train(was)
        return out

    def evaluate(self, model, split: str = "eval", batch_size: int = 16) -> dict[str, float]:
        rows = self.rows(split)
        cut = [len(self.tokenizer(self.prefix + s)["input_ids"]) > self.source_limit for s, _, _ in rows]
        self._count(split, truncated_sources=sum(cut))
        preds = self.generate(model, [s for s, _, _ in rows], batch_size)
        self.predictions = [{"where": w, "source": s, "target": t, "prediction": p, "source_cut": c}
                            for (s, t, w), p, c in zip(rows, preds, cut)]
        # ROUGE against the full reference text (never the max_target_length-cut training labels).
        return {**rouge(preds, [t for _, t, _ in rows]), "n": len(rows),
                "skipped_rows": self.counts.get(split, {}).get("skipped_rows", 0), "truncated_sources": sum(cut)}
