"""``causal_lm``: language modelling on a plain-text file (e.g. the web-text subset the seed fine-tunes on).

A ``.txt`` file is read line by line; a CSV/TSV/JSONL/JSON file through :mod:`guidetune.records`
(its ``text_field``). ``encoding`` applies to both.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..errors import GuidetuneError
from ..spec import check, finish
from .. import records
from .base import TASKS, pad_batch


def texts(path: str, what: str, text_field: str = "text", encoding: str = "utf-8"):
    """Lines of a plain-text file, or the ``text_field`` of each record of a CSV/TSV/JSONL/JSON file."""
    p = records.require_file(path, what)
    if p.suffix.lower() in (*records.DELIMITED, *records.JSON_LINES, ".json"):
        table = records.read_table(p, what, encoding)
        fm = records.FieldMap(table, {"text": text_field})
        for rec in table:
            yield fm.text(rec, "text", allow_empty=True)
    else:
        for _, line in records.read_lines(p, what, encoding):
            yield line


@TASKS.register("causal_lm")
@dataclass
class CausalLM:
    """Next-token prediction on text files, tokenized, concatenated and cut into blocks; perplexity."""

    train: str = field(default="", metadata={"help": "plain-text training file"})
    eval: str | None = field(default=None, metadata={"help": "plain-text evaluation file (default: none)"})
    block_size: int = field(default=128, metadata={"help": "tokens per training example"})
    limit_blocks: int = field(default=0, metadata={"help": "use only the first N blocks (0: all)"})
    text_field: str = field(default="text", metadata={"help": "field holding the text in CSV/TSV/JSONL/JSON files"})
    encoding: str = field(default="utf-8", metadata={"help": "text encoding of the files (e.g. cp1252)"})

    head = "causal_lm"

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.train), "train: give a plain-text training file")
        check(e, self.block_size > 1, f"block_size: must be > 1, got {self.block_size}")
        finish(e)
        self.tokenizer = None
        self._blocks: dict[str, list[dict]] = {}

    def num_labels(self) -> None:
        return None

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._blocks = {}

    def bind_model(self, model) -> None:
        """A block never longer than the model's positions (clamped, with a warning)."""
        from ..evaluation.scoring import max_positions

        n = max_positions(model)
        if n and self.block_size > n:
            logging.getLogger(__name__).warning("causal_lm: block_size %d > the model's %d positions; using %d",
                                                self.block_size, n, n)
            self.block_size = n
            self._blocks = {}

    def dataset(self, split: str) -> list[dict]:
        if split not in self._blocks:
            path = self.train if split == "train" else self.eval
            if not path:
                raise GuidetuneError(f"task.{split}: no {split} file given")
            sep = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
            ids: list[int] = []
            for line in texts(path, f"task.{split}", self.text_field, self.encoding):
                if line.strip():
                    ids += self.tokenizer(line, add_special_tokens=False)["input_ids"] + sep
            n = self.block_size
            blocks = [ids[i:i + n] for i in range(0, len(ids) - n + 1, n)] or ([ids] if len(ids) > 1 else [])
            if not blocks:
                raise GuidetuneError(f"task.{split}: '{path}' holds no text")
            if self.limit_blocks:
                blocks = blocks[: self.limit_blocks]
            self._blocks[split] = [{"input_ids": b, "attention_mask": [1] * len(b), "labels": b} for b in blocks]
        return self._blocks[split]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(self.tokenizer, features)

    @torch.no_grad()
    def evaluate(self, model, split: str = "eval", batch_size: int = 8) -> dict[str, float]:
        if split == "eval" and not self.eval:
            return {}
        feats = self.dataset(split)
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        total, count = 0.0, 0
        for i in range(0, len(feats), batch_size):
            batch = {k: v.to(dev) for k, v in self.collate(feats[i:i + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100,
                                                    reduction="sum")
            total += float(nll)
            count += int((labels != -100).sum())
        model.train(was)
        return {"loss": total / max(count, 1), "perplexity": math.exp(min(total / max(count, 1), 50)), "tokens": count}
