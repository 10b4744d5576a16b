"""``guidetune analyze ablate``: knock out named units, measure every metric before and after, against a
control of as many random units of the same layers.

Methods (what replaces a unit's activation at every token):

* ``zero`` -- 0. For a head (cut at the input of the attention output projection) this removes the
  head's whole contribution to the residual stream, up to the projection's bias.
* ``mean`` -- the unit's mean activation over the non-padding tokens of a reference corpus
  (``--reference``, default the built-in topic corpus): keeps the layer's average input to what
  follows, removes what the unit says about *this* input (mean ablation).
* ``resample`` -- the unit's activation at a token drawn at random from the reference corpus
  (activation patching / resample ablation): all ablated units of a layer take their values from the
  same donor token, so the patched activations are ones the model really produces.

Every ablation is paired with a **control**: R draws (``--draws``, default 20) of the same number of
units drawn at random from the same layer (excluding the ablated ones); the control's change is
reported as mean and standard deviation, and the share of draws that change a metric at least as much
as the ablation. A control costs one evaluation per draw: R = 20 means 20 more evaluations.

Hooks go on the ablated modules only, so an ablated evaluation runs at the speed of a plain one
(``benchmarks/ablation_throughput.py``).

What is measured: with a task (a run's own, or ``--task CONFIG.yaml``), every metric the task's
evaluation reports. Without one (``--task corpus``), on a text corpus: for a causal LM the mean
per-token loss of each sentence; for an encoder the shift of its mean-pooled last hidden state
(1 - cosine to the unablated one); both per concept (sentences with / without the concept's keywords).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from ..compare import is_count
from ..errors import GuidetuneError
from ..layers.names import unwrap
from .ablate_units import UnitSet

METHODS = ("zero", "mean", "resample")
POOL_TOKENS = 20_000  # resample donors: at most this many reference tokens are kept


def forward(model, enc: dict):
    """One forward pass of any head; encoder-decoder models get the input as decoder input too."""
    if getattr(unwrap(model).config, "is_encoder_decoder", False) and "decoder_input_ids" not in enc:
        enc = {**enc, "decoder_input_ids": enc["input_ids"], "decoder_attention_mask": enc["attention_mask"]}
    return model(**{k: v for k, v in enc.items() if k != "labels"})


@contextlib.contextmanager
def attach(model, pairs: list[tuple[UnitSet, Callable]]):
    """Hook ``fn(tensor) -> tensor`` on each unit set's tensor; hooks removed on exit (also on errors)."""
    handles, calls = [], {}

    def gated(s: UnitSet, fn):
        if s.call is None:
            return fn

        def g(x):
            n = calls.get(id(s), 0)
            calls[id(s)] = n + 1
            return fn(x) if n == s.call else x
        return g

    try:
        if any(s.call is not None for s, _ in pairs):
            handles.append(unwrap(model).register_forward_pre_hook(lambda m, a: calls.clear()))
        for s, fn in pairs:
            f = gated(s, fn)
            if s.where == "input":
                handles.append(s.module.register_forward_pre_hook(
                    lambda m, args, f=f: ((f(args[0]),) + tuple(args[1:])) if args else None))
            else:
                handles.append(s.module.register_forward_hook(
                    lambda m, a, o, f=f: ((f(o[0]),) + tuple(o[1:])) if isinstance(o, tuple) else f(o)))
        yield
    finally:
        for h in handles:
            h.remove()


def columns(s: UnitSet, units: list[int] | None = None) -> torch.Tensor:
    """Feature columns of ``units`` in the hooked tensor (a head is head_dim consecutive columns)."""
    units = s.units if units is None else units
    if units is None:
        return torch.arange(s.width * (s.head_dim or 1))
    u = torch.tensor(units)
    if s.kind != "heads":
        return u
    return (u[:, None] * s.head_dim + torch.arange(s.head_dim)[None]).reshape(-1)


class Replace:
    """The hook function: columns ``cols`` of the tensor replaced as ``method`` says."""

    def __init__(self, cols: torch.Tensor, method: str, mean: torch.Tensor | None = None,
                 pool: torch.Tensor | None = None, seed: int = 0):
        self.cols, self.method, self.mean, self.pool = cols, method, mean, pool
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cols = self.cols.to(x.device)
        x = x.clone()
        if self.method == "zero":
            x[..., cols] = 0
        elif self.method == "mean":
            x[..., cols] = self.mean.to(x.device, x.dtype)[cols]
        else:  # resample: one donor token per position, all columns of the layer from that donor
            draw = torch.randint(0, len(self.pool), x.shape[:-1], generator=self.gen)
            x[..., cols] = self.pool[:, self.cols][draw].to(x.device, x.dtype)
        return x


@torch.no_grad()
def reference_stats(model, tok, sets: list[UnitSet], texts: list[str], batch_size: int = 32,
                    max_length: int = 128, seed: int = 0) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """id(unit set) -> (mean over non-padding tokens [features], donor pool [tokens, features])."""
    rows: dict[int, list[torch.Tensor]] = {id(s): [] for s in sets}
    mask_now: list[torch.Tensor] = []

    def record(s):
        def fn(x):
            m = mask_now[0]
            flat = x.detach().float().reshape(-1, x.shape[-1])
            rows[id(s)].append((flat[m.reshape(-1)] if x.shape[:-1] == m.shape else flat).cpu())
            return x
        return fn

    dev, keep = next(model.parameters()).device, _accepted(model)
    with attach(model, [(s, record(s)) for s in sets]):
        for i in range(0, len(texts), batch_size):
            enc = dict(tok(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                           max_length=max_length))
            enc = {k: v for k, v in enc.items() if k in keep}
            mask_now[:] = [enc["attention_mask"].bool().to(dev)]
            forward(model, {k: v.to(dev) for k, v in enc.items()})
    out = {}
    gen = torch.Generator().manual_seed(seed)
    for s in sets:
        allrows = torch.cat(rows[id(s)])
        pool = allrows[torch.randperm(len(allrows), generator=gen)[:POOL_TOKENS]]
        out[id(s)] = (allrows.double().mean(0).float(), pool)
    return out


def _accepted(model) -> set[str]:
    import inspect

    return set(inspect.signature(unwrap(model).forward).parameters)


class Ablator:
    """Evaluate ``evaluate(model) -> {metric: value}`` with unit sets replaced by ``method``."""

    def __init__(self, model, tok, sets: list[UnitSet], method: str = "zero", reference: list[str] | None = None,
                 seed: int = 0, batch_size: int = 32):
        if method not in METHODS:
            raise GuidetuneError(f"--method: '{method}' is not one of {', '.join(METHODS)}")
        self.model, self.sets, self.method, self.seed = model, sets, method, seed
        self.stats = {}
        if method != "zero":
            if not reference:
                raise GuidetuneError(f"--method {method}: needs a reference corpus (--reference)")
            self.stats = reference_stats(model, tok, sets, reference, batch_size, seed=seed)

    def hooks(self, units: list[list[int] | None] | None = None, draw: int = 0):
        """Context manager: the sets' units (or ``units``, one list per set) replaced while inside."""
        pairs = []
        for i, s in enumerate(self.sets):
            mean, pool = self.stats.get(id(s), (None, None))
            cols = columns(s, None if units is None else units[i])
            pairs.append((s, Replace(cols, self.method, mean, pool, seed=self.seed * 1000 + draw * 31 + i)))
        return attach(self.model, pairs)

    def control_units(self, draws: int) -> list[list[list[int]]] | None:
        """``draws`` x sets x units: as many units as ablated, drawn from the rest of each layer."""
        if any(s.units is None or s.count >= s.width for s in self.sets):
            return None  # a whole layer is ablated: there is nothing to draw a control from
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(draws):
            out.append([sorted(int(u) for u in rng.choice(np.setdiff1d(np.arange(s.width), s.units), s.count,
                                                            replace=False)) for s in self.sets])
        return out

    def run(self, evaluate: Callable, draws: int = 20, progress: bool = True) -> dict:
        t0 = time.perf_counter()
        before = _numeric(evaluate(self.model))
        with self.hooks():
            after = _numeric(evaluate(self.model))
        controls = []
        picks = self.control_units(draws) if draws > 0 else None
        for d, units in enumerate(picks or []):
            with self.hooks(units, draw=d + 1):
                controls.append(_numeric(evaluate(self.model)))
            if progress:
                print(f"  control draw {d + 1}/{len(picks)}", end="\n" if d + 1 == len(picks) else "\r", flush=True)
        metrics = {}
        for m in before:
            if m not in after:
                continue
            delta = after[m] - before[m]
            row = {"before": before[m], "after": after[m], "delta": delta}
            cd = np.array([c[m] - before[m] for c in controls if m in c])
            if cd.size:
                row.update(control_mean=float(cd.mean()), control_sd=float(cd.std(ddof=1)) if cd.size > 1 else 0.0,
                           control_at_least=float(np.mean(np.abs(cd) >= abs(delta) - 1e-12)),
                           control_deltas=[float(x) for x in cd])
            metrics[m] = row
        return {"units": [s.describe() for s in self.sets], "method": self.method, "draws": len(controls),
                "control": "none: a whole layer is ablated" if picks is None and draws > 0 else
                f"{len(controls)} draws of as many random units of the same layers (ablated units excluded)",
                "evaluations": 2 + len(controls), "seconds": round(time.perf_counter() - t0, 2), "metrics": metrics}


def _numeric(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and not is_count(k) and np.isfinite(v)}


class CorpusEval:
    """Per-sentence measure on a text corpus, averaged over all sentences and per concept.

    Causal LMs: mean per-token loss of each sentence (``loss``). Other models: 1 - cosine between the
    sentence's mean-pooled last hidden state and the unablated one (``shift``; 0 before ablation)."""

    def __init__(self, model, tok, texts: list[str], concepts: dict[str, list[str]] | None = None,
                 batch_size: int = 32, max_length: int = 128):
        from .neurons import Keywords

        self.tok, self.texts, self.bs, self.max_length = tok, texts, batch_size, max_length
        hf = unwrap(model)
        self.causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (type(hf).__name__,))
        self.name = "loss" if self.causal else "shift"
        self.member = Keywords(concepts).member(texts).numpy() if concepts else np.zeros((len(texts), 0), bool)
        self.concepts = list(concepts or {})
        self.clean = None if self.causal else self._sentence_values(model)

    @torch.no_grad()
    def _sentence_values(self, model) -> torch.Tensor:
        dev = next(model.parameters()).device
        keep = _accepted(model)
        out = []
        for i in range(0, len(self.texts), self.bs):
            enc = dict(self.tok(self.texts[i:i + self.bs], return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_length))
            enc = {k: v.to(dev) for k, v in enc.items() if k in keep}
            mask = enc["attention_mask"]
            if self.causal:
                logits = model(**enc).logits[:, :-1].float()
                labels = enc["input_ids"][:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                        reduction="none")
                out.append((nll.sum(1) / (labels != -100).sum(1).clamp_min(1)).cpu())
            else:
                o = forward(model, {**enc, "output_hidden_states": True} if "output_hidden_states" in keep else enc)
                h = getattr(o, "encoder_last_hidden_state", None)
                h = h if h is not None else (o.hidden_states[-1] if getattr(o, "hidden_states", None) else o.last_hidden_state)
                m = mask[..., None].to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1).clamp_min(1)).float().cpu())
        return torch.cat(out)

    def __call__(self, model) -> dict[str, float]:
        v = self._sentence_values(model)
        if not self.causal:
            v = 1 - torch.nn.functional.cosine_similarity(v, self.clean, dim=-1)
        v = v.double().numpy()
        out = {self.name: float(v.mean())}
        for j, c in enumerate(self.concepts):
            inside = self.member[:, j]
            if inside.any():
                out[f"{self.name}[{c}]"] = float(v[inside].mean())
            if (~inside).any():
                out[f"{self.name}[not {c}]"] = float(v[~inside].mean())
        return out
