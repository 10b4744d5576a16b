"""``guidetune analyze neurons``: which FFN neurons fire, never fire, or fire for a topic (seed poster).

Definitions (all counts are streamed; memory does not grow with the corpus):

* A neuron *fires on a token* when its activation exceeds the threshold: ``threshold`` (default 0, right
  for ReLU), or with ``quantile: q`` a per-neuron threshold, the neuron's own q-quantile over the tokens
  of the first ``calibration`` sentences (useful for GELU, whose outputs are rarely exactly 0).
  Which tokens count (``skip_tokens``): padding never counts. ``special`` (the default) also leaves out
  the tokens a tokenizer adds around the text: its BOS, EOS, CLS and SEP tokens (``[CLS]``/``[SEP]``,
  ``<s>``/``</s>``, ``<|endoftext|>``); every other token counts, including ``[UNK]`` (an unknown word
  is still a word of the sentence) and a ``[MASK]`` written in the corpus. ``none`` counts every
  non-padding token; a comma-separated list (``[CLS],[SEP],[UNK]``) leaves out exactly those tokens.
* It *fires on a sentence* when it fires on any counted token (``sentence_fraction: 0``), or on at least
  that fraction of the sentence's counted tokens.
* *Dead*: fires on no sentence of the corpus. *General*: fires on >= ``general_rate`` of the sentences
  that contain no concept keyword.
* **KT-score** of a neuron for a concept (seed definition): of the sentences that activate the neuron,
  the share that contain a keyword of the concept (= precision against the concept's sentences);
  ``recall`` = the share of the concept's sentences that activate it; ``n`` = sentences behind the score.
* *Consistently activated* by a concept: fires on >= ``consistent_in`` of the concept's sentences and on
  <= ``consistent_out`` of the other sentences.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GuidetuneError
from ..layers.capture import Capture
from ..layers.names import LayerScheme


@dataclass
class Counters:
    """Running per-neuron counts over a corpus."""

    concepts: list[str]
    n: int
    sentences: int = 0
    tokens: int = 0
    device: object = "cpu"  # where the totals accumulate: the activations' device (no per-batch copies)

    TENSORS = ("token_fires", "sentence_fires", "act_sum", "act_max", "concept_sentences", "concept_fires",
               "general_fires")

    def __post_init__(self):
        c, kw = len(self.concepts), dict(dtype=torch.float64, device=self.device)
        self.token_fires = torch.zeros(self.n, **kw)
        self.sentence_fires = torch.zeros(self.n, **kw)
        self.act_sum = torch.zeros(self.n, **kw)
        self.act_max = torch.full((self.n,), -float("inf"), **kw)
        self.concept_sentences = torch.zeros(c, **kw)
        self.concept_fires = torch.zeros(c, self.n, **kw)
        self.general_sentences = 0
        self.general_fires = torch.zeros(self.n, **kw)

    def cpu(self) -> "Counters":
        """The totals moved to the CPU (numpy views and the written files need them there)."""
        for k in self.TENSORS:
            setattr(self, k, getattr(self, k).cpu())
        self.device = "cpu"
        return self

    def all_reduce(self) -> "Counters":
        """Sum the totals of every process (max for ``act_max``): the result equals one process's run over
        the whole corpus (counts exactly; float sums up to summation order)."""
        import torch.distributed as dist

        scalars = torch.tensor([self.sentences, self.tokens, self.general_sentences], dtype=torch.float64,
                               device=self.device)
        for t in [scalars] + [getattr(self, k) for k in self.TENSORS if k != "act_max"]:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        dist.all_reduce(self.act_max, op=dist.ReduceOp.MAX)
        self.sentences, self.tokens, self.general_sentences = (int(x) for x in scalars.tolist())
        return self

    def add(self, acts: torch.Tensor, counted: torch.Tensor, threshold: torch.Tensor | float,
            member: torch.Tensor, sentence_fraction: float) -> None:
        """acts [batch, seq, n]; counted [batch, seq] bool; member [batch, concepts] bool.

        Elementwise work stays in the activations' float32 (it runs once per batch over
        [batch, seq, n]); only the running totals are float64."""
        acts = acts.float()
        keep = counted[..., None]
        fire = (acts > threshold) & keep  # [batch, seq, n]
        per_sentence = fire.sum(1)  # [batch, n] int
        if sentence_fraction > 0:
            n_tok = counted.sum(1, keepdim=True).clamp_min(1)
            fires = per_sentence >= sentence_fraction * n_tok
        else:
            fires = per_sentence > 0
        fires &= counted.any(1, keepdim=True)
        self.sentences += acts.shape[0]
        self.tokens += int(counted.sum())
        self.token_fires += per_sentence.sum(0)
        fires_f = fires.float()
        self.sentence_fires += fires_f.sum(0)
        masked = acts.masked_fill(~keep, 0.0)
        self.act_sum += masked.sum((0, 1))
        self.act_max = torch.maximum(self.act_max, acts.masked_fill(~keep, -float("inf")).amax((0, 1)).double())
        m = member.to(acts.device).float()
        self.concept_sentences += m.sum(0)
        self.concept_fires += m.T @ fires_f
        general = ~member.any(1)
        self.general_sentences += int(general.sum())
        self.general_fires += fires_f[general].sum(0)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k).cpu().numpy() for k in self.TENSORS}
        out.update(sentences=np.array(self.sentences), tokens=np.array(self.tokens),
                   general_sentences=np.array(self.general_sentences), concepts=np.array(self.concepts))
        return out


class Keywords:
    """Whole-word, case-insensitive keyword matching for each concept."""

    def __init__(self, concepts: dict[str, list[str]]):
        if not concepts:
            raise GuidetuneError("--concepts: the concept list is empty; give {name: [keywords, ...]}")
        empty = [c for c, words in concepts.items() if not words]
        if empty:
            raise GuidetuneError(f"--concepts: concept '{empty[0]}' has no keywords")
        self.names = list(concepts)
        self.patterns = [re.compile(r"\b(" + "|".join(re.escape(w.lower()) for w in words) + r")\b")
                         for words in concepts.values()]

    def member(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[bool(p.search(t.lower())) for p in self.patterns] for t in texts], dtype=torch.bool)


def ffn_layer(model, layer: str) -> str:
    """The canonical name of ``layer``, which must be an FFN activation site."""
    scheme = LayerScheme.from_model(model)
    names = scheme.expand(layer)
    if len(names) != 1 or not names[0].endswith(".ffn.act"):
        ffn = [n for n in scheme.names() if n.endswith("ffn.act")]
        raise GuidetuneError(f"--layer: '{layer}' is not an FFN activation layer; neurons live in "
                             f"{ffn[0]} .. {ffn[-1]} (the *.ffn.act names)")
    return names[0]


def skipped_ids(tok, skip_tokens: str | list[str] = "special") -> list[int]:
    """Token ids left out of the counts (besides padding), per ``skip_tokens`` (see the module docstring)."""
    if skip_tokens == "none":
        return []
    if skip_tokens == "special":
        ids = {getattr(tok, f"{k}_token_id", None) for k in ("bos", "eos", "cls", "sep")}
        return sorted(i for i in ids if i is not None)
    names = [t.strip() for t in skip_tokens.split(",")] if isinstance(skip_tokens, str) else list(skip_tokens)
    vocab = tok.get_vocab()
    unknown = [t for t in names if t and t not in vocab]
    if unknown:
        raise GuidetuneError(f"--skip-tokens: '{unknown[0]}' is not a token of this tokenizer; give special, none, "
                             f"or tokens such as {tok.cls_token or tok.bos_token or tok.eos_token},{tok.unk_token}")
    return sorted({vocab[t] for t in names if t})


ACTIVATION_KEYS = ("hidden_act", "activation_function", "hidden_activation", "feed_forward_proj", "ffn_act")


def activation_name(model) -> str | None:
    """The FFN nonlinearity the model's config names (``relu``, ``gelu``, ``silu``, ``gated-gelu``), if any."""
    cfg = model.config
    for key in ACTIVATION_KEYS:
        v = getattr(cfg, key, None)
        if isinstance(v, str):
            return v
    return None


def _forward(model, enc) -> None:
    if getattr(model.config, "is_encoder_decoder", False):
        model.get_encoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    else:
        model(**enc)


@torch.no_grad()
def collect(model, tok, batches, layer: str, keywords: Keywords, threshold: float | None = 0.0,
            quantile: float | None = None, calibration: int = 200, sentence_fraction: float = 0.0,
            skip_special: bool = True, max_length: int = 128, rank: int = 0,
            world: int = 1, skip_tokens: str | list[str] = "special") -> tuple[Counters, np.ndarray]:
    """Stream text batches through ``model``; (counters, per-neuron thresholds used).

    Batches go to the model's device. With ``world`` > 1 processes, process ``rank`` counts batches
    ``rank, rank + world, ...`` and the totals are all-reduced, so every process returns the one-process
    counts. A quantile threshold is calibrated by every process on the same first sentences."""
    from ..devices import to_device
    from .common import model_device

    name = ffn_layer(model, layer)
    dev = model_device(model)
    cap = Capture(model, [name], detach=True)
    special = torch.tensor(skipped_ids(tok, skip_tokens if skip_special else "none"), dtype=torch.long)
    counters, thr, held = None, threshold, []
    for j, texts in enumerate(batches):
        calibrating = quantile is not None and not isinstance(thr, torch.Tensor)
        mine = j % world == rank
        if not (mine or calibrating):
            continue
        enc = dict(tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length))
        counted = enc["attention_mask"].bool()
        if skip_special:
            counted &= ~torch.isin(enc["input_ids"], special)
        with cap as captures:
            _forward(model, to_device(enc, dev))
        acts = captures[name]
        counted = counted.to(acts.device)
        if counters is None:
            counters = Counters(keywords.names, acts.shape[-1], device=acts.device)
        if calibrating:
            held.append((acts, counted, keywords.member(texts), mine))  # calibration sentences wait for the threshold
            if sum(h[0].shape[0] for h in held) < calibration:
                continue
            thr = _quantile_threshold(held, quantile)
            for a, c, m, own in held:
                if own:
                    counters.add(a, c, thr, m, sentence_fraction)
            held = []
            continue
        counters.add(acts, counted, thr, keywords.member(texts), sentence_fraction)
    if held:  # corpus shorter than the calibration sample
        thr = _quantile_threshold(held, quantile)
        for a, c, m, own in held:
            if own:
                counters.add(a, c, thr, m, sentence_fraction)
    if world > 1:
        counters = _reduce(counters, keywords, dev)
    if counters is None or counters.sentences == 0:
        raise GuidetuneError("--corpus: the corpus is empty")
    thr_arr = thr.cpu().numpy() if isinstance(thr, torch.Tensor) else np.full(counters.n, float(thr))
    return counters.cpu(), thr_arr


def _reduce(counters: Counters | None, keywords: Keywords, dev) -> Counters | None:
    """All-reduce across processes; a process that got no batch contributes zeros of the right width."""
    import torch.distributed as dist

    where = dev if dev.type == "cuda" and "nccl" in str(dist.get_backend()) else torch.device("cpu")
    n = torch.tensor([counters.n if counters is not None else 0], device=where)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    if counters is None:
        counters = Counters(keywords.names, int(n), device=where)
    elif where.type == "cpu":
        counters.cpu()
    return counters.all_reduce()


def _quantile_threshold(held, q: float) -> torch.Tensor:
    vals = torch.cat([h[0][h[1]] for h in held]).double()  # [tokens, n]
    return torch.quantile(vals, q, dim=0)


def summarize(c: Counters, general_rate: float = 0.5, consistent_in: float = 0.5, consistent_out: float = 0.1) -> dict:
    """Per-neuron rates and the layer summary."""
    s = max(c.sentences, 1)
    sentence_rate = c.sentence_fires.numpy() / s
    general_rate_n = c.general_fires.numpy() / max(c.general_sentences, 1)
    return {
        "sentences": c.sentences,
        "tokens": c.tokens,
        "neurons": c.n,
        "dead_fraction": float((c.sentence_fires.numpy() == 0).mean()),
        "general_neurons": int((general_rate_n >= general_rate).sum()) if c.general_sentences else 0,
        "general_sentences": c.general_sentences,
        "mean_sentence_rate": float(sentence_rate.mean()),
    }


def concept_scores(c: Counters, consistent_in: float = 0.5, consistent_out: float = 0.1) -> dict[str, dict[str, np.ndarray]]:
    """Per concept: kt (precision), recall, n (sentences activating), in/out firing rates, consistent."""
    out = {}
    fires = c.sentence_fires.numpy()
    for i, name in enumerate(c.concepts):
        both = c.concept_fires[i].numpy()
        n_concept = float(c.concept_sentences[i])
        n_other = c.sentences - n_concept
        rate_in = both / max(n_concept, 1)
        rate_out = (fires - both) / max(n_other, 1)
        out[name] = {
            "kt": np.divide(both, fires, out=np.zeros_like(both), where=fires > 0),
            "recall": rate_in,
            "n": fires,
            "rate_in": rate_in,
            "rate_out": rate_out,
            "consistent": (rate_in >= consistent_in) & (rate_out <= consistent_out),
            "concept_sentences": n_concept,
        }
    return out


def top_neurons(scores: dict, concept: str, k: int = 10, min_support: int = 3) -> list[int]:
    """Neuron ids with the highest KT-score for ``concept`` (ties: higher recall), among those activated
    by at least ``min_support`` sentences."""
    s = scores[concept]
    ok = np.nonzero(s["n"] >= min_support)[0]
    order = sorted(ok, key=lambda i: (-s["kt"][i], -s["recall"][i], i))
    return [int(i) for i in order[:k]]
