"""``multiple_choice``: Inverse Scaling Prize format, scored by the log-likelihood of each class.

Rows (CSV or JSONL) hold ``prompt``, ``classes`` (the continuations; in CSV a Python/JSON list literal,
parsed with ``ast.literal_eval``, never ``eval``) and ``answer_index``. Each class is scored by the
summed log-probability of its tokens given the prompt (causal or seq2seq LM; see
:mod:`guidetune.evaluation.scoring`, which encodes each prompt once); ``accuracy`` picks the highest
sum, ``accuracy_norm`` the highest per-token mean. Per-item scores are kept in ``predictions``.
The task can also be trained on: the loss is the LM loss of the correct class given the prompt.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import GuidetuneError
from ..evaluation.scoring import option_logprobs
from ..spec import check, finish
from .base import TASKS, data_path, need, pad_batch, read_records


@dataclass(frozen=True)
class Item:
    prompt: str
    classes: tuple[str, ...]
    answer: int


def read_items(path_str: str, field_name: str) -> list[Item]:
    path = data_path(path_str, field_name)
    items = []
    for line, rec in read_records(path):
        prompt = str(need(rec, "prompt", path, line))
        classes = need(rec, "classes", path, line)
        if isinstance(classes, str):
            try:
                classes = ast.literal_eval(classes)
            except (ValueError, SyntaxError):
                raise GuidetuneError(f"{path}:{line}: 'classes' must be a list literal such as [\" yes\", \" no\"], "
                                     f"got {classes[:60]!r}") from None
        if not isinstance(classes, (list, tuple)) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise GuidetuneError(f"{path}:{line}: 'classes' must be a list of at least two strings, got {classes!r}")
        raw = need(rec, "answer_index", path, line)
        try:
            answer = int(raw)
        except (TypeError, ValueError):
            raise GuidetuneError(f"{path}:{line}: answer_index must be an integer, got {raw!r}") from None
        if not 0 <= answer < len(classes):
            raise GuidetuneError(f"{path}:{line}: answer_index {answer} is out of range for {len(classes)} classes "
                                 f"(0-{len(classes) - 1})")
        items.append(Item(prompt, tuple(classes), answer))
    if not items:
        raise GuidetuneError(f"{field_name}: '{path_str}' holds no rows")
    return items


@TASKS.register("multiple_choice")
@dataclass
class MultipleChoice:
    """Inverse Scaling format (prompt, classes, answer_index); accuracy by class log-likelihood."""

    eval: str = field(default="", metadata={"help": "CSV or JSONL with prompt, classes, answer_index"})
    train: str | None = field(default=None, metadata={"help": "optional training file, same format"})
    format: Literal["causal", "seq2seq"] = field(default="causal", metadata={"help": "causal or seq2seq LM"})
    max_length: int = 512
    limit: int = field(default=0, metadata={"help": "use only the first N items (0: all)"})

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.eval), "eval: give the evaluation file")
        check(e, self.max_length > 8, f"max_length: must be > 8, got {self.max_length}")
        finish(e)
        self.tokenizer = None
        self.predictions: list[dict] = []
        self._items: dict[str, list[Item]] = {}

    @property
    def head(self) -> str:
        return "causal_lm" if self.format == "causal" else "seq2seq_lm"

    def num_labels(self) -> None:
        return None

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.items("eval")

    def items(self, split: str) -> list[Item]:
        if split not in self._items:
            path = self.eval if split == "eval" else self.train
            if not path:
                raise GuidetuneError(f"task.{split}: this multiple_choice task has no {split} file")
            items = read_items(path, f"task.{split}")
            self._items[split] = items[: self.limit] if self.limit else items
        return self._items[split]

    def dataset(self, split: str) -> list[dict]:
        tok, feats = self.tokenizer, []
        for it in self.items(split):
            answer = it.classes[it.answer]
            if self.format == "causal":
                p = tok(it.prompt)["input_ids"]
                c = tok(answer, add_special_tokens=False)["input_ids"]
                ids = (p + c)[-self.max_length:]
                labels = ([-100] * len(p) + c)[-self.max_length:]
                feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
            else:
                enc = tok(it.prompt, truncation=True, max_length=self.max_length)
                feats.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "labels": tok(answer)["input_ids"]})
        return feats

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(self.tokenizer, features)

    def evaluate(self, model, split: str = "eval", batch_size: int = 16) -> dict[str, float]:
        items = self.items(split)
        scores = option_logprobs(model, self.tokenizer, [i.prompt for i in items], [i.classes for i in items],
                                 self.head, self.max_length, batch_items=batch_size)
        correct = correct_norm = 0
        correct_lp = 0.0
        self.predictions = []
        for it, s in zip(items, scores):
            sums = [x for x, _ in s]
            means = [x / max(n, 1) for x, n in s]
            pred, pred_norm = max(range(len(s)), key=sums.__getitem__), max(range(len(s)), key=means.__getitem__)
            correct += pred == it.answer
            correct_norm += pred_norm == it.answer
            correct_lp += sums[it.answer]
            self.predictions.append({"prompt": it.prompt, "classes": list(it.classes), "answer_index": it.answer,
                                     "logprob": sums, "logprob_per_token": means, "pred": pred,
                                     "pred_norm": pred_norm})
        n = len(items)
        return {"accuracy": correct / n, "accuracy_norm": correct_norm / n,
                "correct_logprob": correct_lp / n, "n": n}
