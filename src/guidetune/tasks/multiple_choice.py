"""``multiple_choice``: Inverse Scaling Prize format, scored by the log-likelihood of each class.

Rows (CSV, TSV, JSONL or JSON, read by :mod:`guidetune.records`) hold ``prompt``, ``classes`` (the
continuations: a JSON list, or in CSV a Python/JSON list literal parsed with ``ast.literal_eval``,
never ``eval``) and ``answer_index`` (an integer, a label through ``label_map``, or the text of the
right class). Files with other field names are read through ``fields:``, e.g.
``{prompt: input, classes: options, answer_index: label}``. ``prefix`` (e.g. few-shot examples) is
put before every prompt.

Each class is scored by the summed log-probability of its tokens given the prompt (causal or seq2seq
LM; see :mod:`guidetune.evaluation.scoring`, which encodes each prompt once and owns the truncation
policy: a prompt longer than the limit keeps its **end**; the limit is ``max_length`` clamped to the
model's positions; training uses the same cut). ``accuracy`` picks the highest sum, ``accuracy_norm``
the highest per-token mean; ``truncated_items`` counts the prompts that were cut. Per-item scores are
kept in ``predictions``. Training: the LM loss of the correct class given the prompt.
"""
from __future__ import annotations

import ast
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .. import records
from ..errors import GuidetuneError
from ..evaluation.scoring import effective_limit, fit_prompt, option_logprobs
from ..spec import check, finish
from .base import TASKS, pad_batch

log = logging.getLogger(__name__)
FIELDS = ("prompt", "classes", "answer_index")


@dataclass(frozen=True)
class Item:
    prompt: str
    classes: tuple[str, ...]
    answer: int
    where: str = ""  # file:line


def _classes(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise GuidetuneError(f"{where}: 'classes' must be a list literal such as [\" yes\", \" no\"], "
                                 f"got {value[:60]!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) < 2 or not all(isinstance(c, str) for c in value):
        raise GuidetuneError(f"{where}: 'classes' must be a list of at least two strings, got {value!r}")
    return tuple(value)


def _answer(fm: records.FieldMap, rec: records.Record, classes: tuple[str, ...]) -> int:
    col = fm.names["answer_index"]
    where = rec.where(col)
    raw = fm.label(rec, "answer_index")
    if isinstance(raw, bool):
        raise GuidetuneError(f"{where}: answer_index must be an integer, got {raw!r}")
    try:
        answer = int(raw)
    except (TypeError, ValueError):
        texts = [c.strip() for c in classes]
        if isinstance(raw, str) and raw.strip() in texts:  # the right class's text, as some re-releases store it
            return texts.index(raw.strip())
        raise GuidetuneError(f"{where}: answer_index must be an integer (or a class, or a label in label_map), "
                             f"got {raw!r}") from None
    if not 0 <= answer < len(classes):
        raise GuidetuneError(f"{where}: answer_index {answer} is out of range for {len(classes)} classes "
                             f"(0-{len(classes) - 1})")
    return answer


def read_items(path: str, what: str, fields: dict | None = None, label_map: dict | None = None,
               encoding: str = "utf-8", prefix: str = "") -> list[Item]:
    """The items of a multiple-choice file (any layout :mod:`guidetune.records` reads)."""
    table = records.read_table(path, what, encoding)
    fm = records.FieldMap(table, {k: k for k in FIELDS}, fields, label_map=label_map)
    items = []
    for rec in table:
        prompt = fm.text(rec, "prompt", allow_empty=bool(prefix))
        classes = _classes(fm.value(rec, "classes"), rec.where(fm.names["classes"]))
        items.append(Item(prefix + prompt, classes, _answer(fm, rec, classes), rec.where()))
    return items


@TASKS.register("multiple_choice")
@dataclass
class MultipleChoice:
    """Inverse Scaling format (prompt, classes, answer_index); accuracy by class log-likelihood."""

    eval: str = field(default="", metadata={"help": "CSV/TSV/JSONL/JSON with prompt, classes, answer_index"})
    train: str | None = field(default=None, metadata={"help": "optional training file, same format"})
    format: Literal["causal", "seq2seq"] = field(default="causal", metadata={"help": "causal or seq2seq LM"})
    max_length: int = field(default=2048, metadata={"help": "token limit (clamped to the model's positions); "
                                                            "longer prompts keep their end"})
    limit: int = field(default=0, metadata={"help": "use only the first N items (0: all)"})
    prefix: str = field(default="", metadata={"help": "text put before every prompt (e.g. few-shot examples)"})
    fields: dict[str, str] | None = field(default=None, metadata={
        "help": "task field -> file field, e.g. {prompt: input, classes: options, answer_index: label}"})
    label_map: dict[str, int] | None = field(default=None, metadata={"help": "answer label -> class index"})
    encoding: str = field(default="utf-8", metadata={"help": "text encoding of the files (e.g. cp1252)"})

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.eval), "eval: give the evaluation file")
        check(e, self.max_length > 8, f"max_length: must be > 8, got {self.max_length}")
        records.check_mapping(self.fields, FIELDS, e)
        finish(e)
        self.tokenizer = None
        self.model_positions: int | None = None
        self.predictions: list[dict] = []
        self.truncation: dict = {}
        self._items: dict[str, list[Item]] = {}

    @property
    def head(self) -> str:
        return "causal_lm" if self.format == "causal" else "seq2seq_lm"

    def num_labels(self) -> None:
        return None

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.items("eval")

    def bind_model(self, model) -> None:
        """Clamp the limit to the model's positions for training features too (same cut as scoring)."""
        self.model_positions = effective_limit(model, self.max_length)

    def items(self, split: str) -> list[Item]:
        if split not in self._items:
            path = self.eval if split == "eval" else self.train
            if not path:
                raise GuidetuneError(f"task.{split}: this multiple_choice task has no {split} file")
            items = read_items(path, f"task.{split}", self.fields, self.label_map, self.encoding, self.prefix)
            self._items[split] = items[: self.limit] if self.limit else items
        return self._items[split]

    def dataset(self, split: str) -> list[dict]:
        tok, feats, cut_items = self.tokenizer, [], 0
        limit = self.model_positions or self.max_length
        for it in self.items(split):
            answer = it.classes[it.answer]
            if self.format == "causal":
                conts = [tok(c, add_special_tokens=False)["input_ids"] for c in it.classes]
                budget = limit - max(len(c) for c in conts)
                if budget < 1:
                    raise GuidetuneError(f"{it.where}: an option is {limit - budget} tokens; with one prompt token "
                                         f"it does not fit the model's {limit} positions")
                p, cut = fit_prompt(tok, it.prompt, budget)
                c = conts[it.answer]
                feats.append({"input_ids": p + c, "attention_mask": [1] * (len(p) + len(c)),
                              "labels": [-100] * len(p) + c})
            else:
                labels = tok(answer)["input_ids"]
                if len(labels) > limit:
                    raise GuidetuneError(f"{it.where}: the answer is {len(labels)} tokens, more than {limit}")
                p, cut = fit_prompt(tok, it.prompt, limit)
                feats.append({"input_ids": p, "attention_mask": [1] * len(p), "labels": labels})
            cut_items += cut > 0
        if cut_items:
            log.warning("multiple_choice %s: %d of %d prompts cut to %d tokens (their end kept)", split, cut_items,
                        len(feats), limit)
        self.truncation[split] = cut_items
        return feats

    def describe(self) -> dict:
        return {f"truncated_{k}": v for k, v in self.truncation.items()}

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(self.tokenizer, features)

    def evaluate(self, model, split: str = "eval", batch_size: int = 16) -> dict[str, float]:
        items = self.items(split)
        report: dict = {}
        scores = option_logprobs(model, self.tokenizer, [i.prompt for i in items], [i.classes for i in items],
                                 self.head, self.max_length, batch_items=batch_size, report=report,
                                 where=lambda k: items[k].where)
        if report["truncated_items"]:
            log.warning("multiple_choice %s: %d of %d prompts longer than %s tokens were cut (their end kept)",
                        split, report["truncated_items"], len(items), report["limit"])
        correct = correct_norm = 0
        correct_lp = 0.0
        self.predictions = []
        for it, s, cut in zip(items, scores, report["cut"]):
            sums = [x for x, _ in s]
            means = [x / max(n, 1) for x, n in s]
            pred, pred_norm = max(range(len(s)), key=sums.__getitem__), max(range(len(s)), key=means.__getitem__)
            correct += pred == it.answer
            correct_norm += pred_norm == it.answer
            correct_lp += sums[it.answer]
            self.predictions.append({"where": it.where, "prompt": it.prompt, "classes": list(it.classes),
                                     "answer_index": it.answer, "logprob": sums, "logprob_per_token": means,
                                     "pred": pred, "pred_norm": pred_norm, "prompt_tokens_cut": cut})
        n = len(items)
        out = {"accuracy": correct / n, "accuracy_norm": correct_norm / n, "correct_logprob": correct_lp / n,
               "n": n, "truncated_items": report["truncated_items"], "truncated_tokens": report["truncated_tokens"]}
        if report["limit"] is not None:  # None: the model has no position limit (T5) and max_length is off
            out["max_tokens"] = report["limit"]
        return out
