"""``seq2seq``: text-to-text (e.g. summarization) from JSONL; teacher-forced training; ROUGE on generations.

Rows hold ``source`` and ``target`` (names configurable); ``prefix`` is prepended to every source (T5
style, e.g. ``"summarize: "``). Training is teacher-forced through the GuidedTrainer, so every
regularizer works with it. Evaluation generates with beam search (``num_beams``, ``max_new_tokens``) in
length-sorted batches and scores ROUGE-1/2/L F-measures with Google's ``rouge-score`` package.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..evaluation.metrics import rouge
from ..spec import check, finish
from .base import TASKS, data_path, need, pad_batch, read_records


@TASKS.register("seq2seq")
@dataclass
class Seq2Seq:
    """Source -> target text; ROUGE-1/2/L of beam-search generations."""

    train: str = field(default="", metadata={"help": "JSONL/CSV with source and target"})
    eval: str = field(default="", metadata={"help": "JSONL/CSV with source and target"})
    source_field: str = "source"
    target_field: str = "target"
    prefix: str = field(default="", metadata={"help": "prepended to every source, e.g. 'summarize: '"})
    max_source_length: int = 512
    max_target_length: int = 128
    num_beams: int = 4
    max_new_tokens: int = 128
    limit: int = field(default=0, metadata={"help": "use only the first N rows per split (0: all)"})

    head = "seq2seq_lm"

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.train) or bool(self.eval), "train: give a training and/or an evaluation file")
        check(e, self.num_beams >= 1, f"num_beams: must be >= 1, got {self.num_beams}")
        check(e, self.max_new_tokens >= 1, f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        finish(e)
        self.tokenizer = None
        self.predictions: list[dict] = []
        self._rows: dict[str, list[tuple[str, str]]] = {}

    def num_labels(self) -> None:
        return None

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def rows(self, split: str) -> list[tuple[str, str]]:
        if split not in self._rows:
            path = data_path(self.train if split == "train" else self.eval, f"task.{split}")
            rows = [(str(need(r, self.source_field, path, line)), str(need(r, self.target_field, path, line)))
                    for line, r in read_records(path)]
            self._rows[split] = rows[: self.limit] if self.limit else rows
        return self._rows[split]

    def dataset(self, split: str) -> list[dict]:
        tok, feats = self.tokenizer, []
        for src, tgt in self.rows(split):
            enc = tok(self.prefix + src, truncation=True, max_length=self.max_source_length)
            labels = tok(tgt, truncation=True, max_length=self.max_target_length)["input_ids"]
            feats.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
        return feats

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
                                 truncation=True, max_length=self.max_source_length).to(dev)
            gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)
            for j, text in zip(idx, self.tokenizer.batch_decode(gen, skip_special_tokens=True)):
                out[j] = text.strip()
        model.train(was)
        return out

    def evaluate(self, model, split: str = "eval", batch_size: int = 16) -> dict[str, float]:
        rows = self.rows(split)
        preds = self.generate(model, [s for s, _ in rows], batch_size)
        self.predictions = [{"source": s, "target": t, "prediction": p} for (s, t), p in zip(rows, preds)]
        return {**rouge(preds, [t for _, t in rows]), "n": len(rows)}
