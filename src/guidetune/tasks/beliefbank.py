"""``beliefbank``: yes/no questions from a BeliefBank release; F1 and logical consistency (SpARC).

Training questions are the silver facts of the training split (80% of every entity's facts); the
evaluation reports, on the chosen evaluation split: F1 (positive class = yes) and accuracy; on the
constraint graph's edge questions: edge F1 and multi-hop consistency (asking only the implied
questions the metric needs, or the whole dense question set when ``consistency: dense``); on every
entity's facts: BeliefBank's constraint consistency (see :mod:`guidetune.evaluation.consistency`).

Formats: ``classification`` (a yes/no head, e.g. MiniLM; label 1 = yes), ``seq2seq`` (MACAW's
``$answer$ ; $mcoptions$ = (A) Yes (B) No ; $question$ = ...``, scored by the log-likelihood of
``$answer$ = Yes`` vs ``$answer$ = No``), ``causal`` (``Question: ...\\nAnswer:`` scored by " yes" vs " no").
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..beliefbank.data import MINIBANK, BeliefBank, Question, negate_some, split_facts
from ..beliefbank.pairs import PairSampler, mine
from ..evaluation.consistency import constraint_consistency, multihop_consistency, pairs_to_ask
from ..evaluation.metrics import classification_metrics
from ..evaluation.scoring import option_logprobs
from ..spec import check, finish
from .base import TASKS, eos_index, pad_batch, predict

log = logging.getLogger(__name__)

HEADS = {"classification": "classification", "seq2seq": "seq2seq_lm", "causal": "causal_lm"}
MACAW = "$answer$ ; $mcoptions$ = (A) Yes (B) No ; $question$ = "
MACAW_TARGETS = ("$answer$ = Yes", "$answer$ = No")
CAUSAL_PROMPT, CAUSAL_OPTIONS = ("Question: ", "\nAnswer:"), (" yes", " no")


@TASKS.register("beliefbank")
@dataclass
class BeliefBankTask:
    """Yes/no questions from a BeliefBank release; F1, multi-hop and constraint consistency."""

    data: str = field(default=MINIBANK, metadata={"help": "release directory, or guidetune:minibank (built in)"})
    format: Literal["classification", "seq2seq", "causal"] = field(
        default="classification", metadata={"help": "yes/no head, MACAW text-to-text, or causal-LM scoring"})
    negation: Literal["none", "balance", "fraction"] = field(
        default="none", metadata={"help": "negated phrasings: none, balance yes/no (SpARC), or a fraction"})
    negation_fraction: float = 0.5
    split_seed: int = field(default=0, metadata={"help": "seed of the 80/10/10 per-entity split"})
    eval_split: Literal["val", "test"] = "test"
    max_length: int = 48
    pairs: Literal["none", "linked", "adjacent", "embedding"] = field(
        default="none", metadata={"help": "similar-question pairs for the contrastive loss"})
    pair_data: Literal["pairs", "all"] = field(
        default="pairs", metadata={"help": "train on the paired questions only (SpARC), or on every training "
                                           "question (unpaired ones act as negatives only)"})
    max_pairs: int = field(default=-1, metadata={"help": "cap on pairs; -1: half the training questions; 0: all"})
    pair_threshold: float | None = field(default=None, metadata={"help": "embedding pairs: cosine threshold "
                                                                          "(default: mean cosine of linked pairs)"})
    consistency: Literal["needed", "dense", "off"] = field(
        default="needed", metadata={"help": "ask the implied multi-hop questions only, all 583x1846, or none"})
    multihop_k: int = field(default=9, metadata={"help": "longest path length of the multi-hop metric"})
    constraint_facts: Literal["all", "eval"] = field(
        default="all", metadata={"help": "facts whose answers form the beliefs for constraint consistency"})
    limit_train: int = field(default=0, metadata={"help": "use a seeded sample of N training questions (0: all)"})

    def __post_init__(self):
        e: list[str] = []
        check(e, 0 < self.negation_fraction <= 1, f"negation_fraction: must be in (0, 1], got {self.negation_fraction}")
        check(e, self.multihop_k >= 2, f"multihop_k: must be >= 2, got {self.multihop_k}")
        check(e, self.max_length > 8, f"max_length: must be > 8, got {self.max_length}")
        finish(e)
        self.tokenizer = None
        self._bank: BeliefBank | None = None
        self._cache: dict = {}
        self.pair_report: dict | None = None
        self.predictions: list[dict] = []

    @property
    def head(self) -> str:
        return HEADS[self.format]

    @property
    def bank(self) -> BeliefBank:
        if self._bank is None:
            self._bank = BeliefBank.load(self.data)
        return self._bank

    def num_labels(self) -> int:
        return 2

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache = {}
        self.bank  # noqa: B018  (load and check the files now, not mid-training)

    # ---- questions -------------------------------------------------------------------------------
    def questions(self, split: str) -> list[Question]:
        """Questions of ``train``, ``val`` or ``test`` (``eval`` = the configured evaluation split)."""
        split = self.eval_split if split == "eval" else split
        key = ("questions", split)
        if key not in self._cache:
            parts = dict(zip(("train", "val", "test"), split_facts(self.bank.facts, self.split_seed)))
            qs = self.bank.fact_questions(parts[split])
            seed = self.split_seed * 3 + ("train", "val", "test").index(split)
            qs = negate_some(qs, self.negation, self.negation_fraction, seed, self.bank.non_countable)
            if split == "train" and 0 < self.limit_train < len(qs):  # a seeded sample, in file order
                keep = set(random.Random(f"limit:{self.split_seed}").sample(range(len(qs)), self.limit_train))
                qs = [q for i, q in enumerate(qs) if i in keep]
            self._cache[key] = qs
        return self._cache[key]

    def describe(self) -> dict:
        out = {name: len(self.questions(name)) for name in ("train", "val", "test")}
        out["negated_train"] = sum(q.negated for q in self.questions("train"))
        out["edges"] = len(self.bank.edge_questions())
        if self.pair_report:
            out["pairs"] = self.pair_report
        return out

    # ---- features --------------------------------------------------------------------------------
    def _prompt(self, q: Question) -> tuple[str, int]:
        """(model input text, offset of the question inside it)."""
        if self.format == "seq2seq":
            return MACAW + q.text, len(MACAW)
        if self.format == "causal":
            return CAUSAL_PROMPT[0] + q.text + CAUSAL_PROMPT[1], len(CAUSAL_PROMPT[0])
        return q.text, 0

    def features(self, questions: list[Question], roles: list[str] | None = None, labels: bool = True) -> list[dict]:
        tok = self.tokenizer
        texts = [self._prompt(q) for q in questions]
        enc = tok([t for t, _ in texts], truncation=True, max_length=self.max_length)
        feats = []
        for i, (q, (text, off)) in enumerate(zip(questions, texts)):
            ids = enc["input_ids"][i]
            f = {k: enc[k][i] for k in enc.keys()}
            span = q.object_span if roles and roles[i] == "object" else q.subject_span
            f["gt_eos_index"] = eos_index(ids, tok)
            f["gt_answer_index"] = _token_at(enc, i, len(text) - 1, len(ids))
            f["gt_entity_index"] = _token_at(enc, i, off + span[1] - 1, len(ids))
            if labels:
                self._add_labels(f, q)
            feats.append(f)
        return feats

    def _add_labels(self, f: dict, q: Question) -> None:
        if self.format == "classification":
            f["labels"] = int(q.answer)
        elif self.format == "seq2seq":
            f["labels"] = self.tokenizer(MACAW_TARGETS[0 if q.answer else 1])["input_ids"]
        else:  # causal: train on the answer token(s) only
            cont = self.tokenizer(CAUSAL_OPTIONS[0 if q.answer else 1], add_special_tokens=False)["input_ids"]
            prompt_ids = f["input_ids"]
            f["input_ids"] = prompt_ids + cont
            f["attention_mask"] = f["attention_mask"] + [1] * len(cont)
            f.pop("token_type_ids", None)
            f["labels"] = [-100] * len(prompt_ids) + cont

    def dataset(self, split: str) -> list[dict]:
        key = ("features", split)
        if key in self._cache:
            return self._cache[key]
        qs = self.questions(split)
        if split == "train" and self.pairs != "none":
            cap = len(qs) // 2 if self.max_pairs < 0 else self.max_pairs
            pairs, self.pair_report = mine(self.pairs, qs, self.split_seed, cap, self.pair_threshold)
            log.info("%s pairs: %s", self.pairs, self.pair_report)
            flat = [q for i, j, _, _ in pairs for q in (qs[i], qs[j])]
            roles = [r for _, _, ri, rj in pairs for r in (ri, rj)]
            ids = [n // 2 for n in range(len(flat))]
            if self.pair_data == "all":  # the rest, two by two, marked as nobody's positive
                covered = {i for p in pairs for i in p[:2]}
                rest = [q for i, q in enumerate(qs) if i not in covered]
                rest = rest[: len(rest) // 2 * 2]
                flat, roles, ids = flat + rest, roles + ["subject"] * len(rest), ids + [-1] * len(rest)
            feats = self.features(flat, roles)
            for f, pair_id in zip(feats, ids):
                f["gt_pair_id"] = pair_id
        else:
            feats = self.features(qs)
        self._cache[key] = feats
        return feats

    def train_sampler(self, seed: int):
        """Keeps positive pairs whole in every batch (None when no pairs are used)."""
        if self.pairs == "none":
            return None
        return PairSampler(len(self.dataset("train")) // 2, seed)

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(self.tokenizer, features)

    # ---- answering and evaluation ------------------------------------------------------------------
    def answer(self, model, questions: list[Question], batch_size: int = 64) -> list[bool]:
        """The model's yes (True) / no answer to each question; identical texts are asked once."""
        if not questions:
            return []
        unique = list(dict.fromkeys(q.text for q in questions))
        first = {}
        for q in questions:
            first.setdefault(q.text, q)
        qs = [first[t] for t in unique]
        if self.format == "classification":
            logits = predict(model, self.features(qs, labels=False), self.collate, batch_size)
            said = [bool(x[1] > x[0]) for x in logits]
        else:
            prompts = [self._prompt(q)[0] for q in qs]
            options = MACAW_TARGETS if self.format == "seq2seq" else CAUSAL_OPTIONS
            scores = option_logprobs(model, self.tokenizer, prompts, [options] * len(qs), self.head,
                                     self.max_length, batch_items=max(batch_size // 2, 1))
            said = [s[0][0] > s[1][0] for s in scores]
        by_text = dict(zip(unique, said))
        return [by_text[q.text] for q in questions]

    def evaluate(self, model, split: str = "eval", batch_size: int = 64) -> dict[str, float]:
        self.predictions = []
        qs = self.questions(split)
        pred = self.answer(model, qs, batch_size)
        self._record("fact", qs, pred)
        out = _prf("", qs, pred)
        if any(q.negated for q in qs):  # how the model does on each phrasing
            for tag, keep in (("negated", True), ("plain", False)):
                pairs = [(q, p) for q, p in zip(qs, pred) if q.negated == keep]
                out[f"accuracy_{tag}"] = sum(q.answer == p for q, p in pairs) / max(len(pairs), 1)
        if self.consistency != "off":
            out.update(self._multihop(model, batch_size))
        facts = self.bank.facts
        if self.constraint_facts == "eval":
            facts = dict(zip(("train", "val", "test"), split_facts(facts, self.split_seed)))[
                self.eval_split if split == "eval" else split]
        fq = self.bank.fact_questions(facts)
        beliefs: dict[str, dict[str, bool]] = {}
        for q, a in zip(fq, self.answer(model, fq, batch_size)):
            beliefs.setdefault(q.subject, {})[q.target] = a
        self._record("constraint", fq, [beliefs[q.subject][q.target] for q in fq])
        cc = constraint_consistency(beliefs, self.bank.links)
        out.update({"constraint_consistency": cc["consistency"], "constraint_applicable": cc["applicable"]})
        return out

    def _multihop(self, model, batch_size: int) -> dict:
        bank = self.bank
        edge_answers: dict[tuple[str, str], bool] = {}
        chunks = _dense_chunks(bank) if self.consistency == "dense" else [bank.edge_questions()]
        for edges in chunks:  # the dense set (1,076,218 questions on the release) is streamed in chunks
            said = self.answer(model, edges, batch_size)
            edge_answers.update({(q.source, q.target): a for q, a in zip(edges, said)})
        needed = pairs_to_ask(edge_answers, self.multihop_k)
        asked = [bank.question(s.split(",", 1)[1], z) for s, z in needed if s.startswith("IsA,")]
        pair_answers = {(q.source, q.target): a for q, a in zip(asked, self.answer(model, asked, batch_size))}
        mh = multihop_consistency(edge_answers, pair_answers, self.multihop_k)
        gold_edges = bank.edge_questions()
        out = {f"edge_{k}": v for k, v in _prf("", gold_edges, [edge_answers[(q.source, q.target)] for q in gold_edges]).items()}
        self._record("edge", gold_edges, [edge_answers[(q.source, q.target)] for q in gold_edges])
        self._record("multihop", asked, [pair_answers[(q.source, q.target)] for q in asked])
        out.update({"multihop_consistency": mh["consistency"], "multihop_checks": mh["checks"],
                    "multihop_questions": len(asked)})
        return out

    def _record(self, kind: str, qs: list[Question], said: list[bool]) -> None:
        self.predictions += [{"kind": kind, "subject": q.subject, "target": q.target, "question": q.text,
                              "negated": q.negated, "gold": q.answer, "pred": a} for q, a in zip(qs, said)]


def _dense_chunks(bank: BeliefBank, subjects_per_chunk: int = 8):
    """Every IsA node paired with every other node, a few subjects' questions at a time."""
    isa = [n.split(",", 1)[1] for n in bank.nodes if n.startswith("IsA,")]
    for start in range(0, len(isa), subjects_per_chunk):
        yield [bank.question(s, t) for s in isa[start:start + subjects_per_chunk] for t in bank.nodes
               if t != f"IsA,{s}"]


def _token_at(enc, i: int, char: int, n_tokens: int) -> int:
    """Index of the token covering character ``char`` (fast tokenizers); else the last real token."""
    try:
        t = enc.char_to_token(i, char)
    except (ValueError, TypeError):
        t = None
    return t if t is not None else max(n_tokens - 2, 0)


def _prf(prefix: str, qs: list[Question], pred: list[bool]) -> dict[str, float]:
    m = classification_metrics([int(q.answer) for q in qs], [int(p) for p in pred], num_labels=2, positive=1)
    return {f"{prefix}f1": m["f1"], f"{prefix}accuracy": m["accuracy"], f"{prefix}n": m["n"]}
