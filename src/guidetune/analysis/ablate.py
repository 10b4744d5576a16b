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
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..compare import is_count
from ..errors import GuidetuneError
from ..layers.names import unwrap
from ..runs import atomic_write
from .ablate_units import UnitSet, parse_units

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


def _num(x: float, sign: bool = False) -> str:
    """4 decimals, or 3 significant digits for small values (embedding shifts are ~1e-4); below 1e-6
    (float rounding of an unablated shift) shown as 0 -- the JSON keeps the exact value."""
    x = 0.0 if abs(x) < 1e-6 else x
    if x != 0 and abs(x) < 0.01:
        return f"{x:+.2e}" if sign else f"{x:.2e}"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def markdown(res: dict) -> str:
    lines = [f"Units: {'; '.join(res['units'])}. Method: {res['method']}. Control: {res['control']}.", "",
             "| metric | before | ablated | change | random-units control: change, mean ± sd | controls changing it at least as much |",
             "|---|---|---|---|---|---|"]
    for m, r in res["metrics"].items():
        ctl = (f"{_num(r['control_mean'], True)} ± {_num(r['control_sd'])}", f"{r['control_at_least']:.0%}") if "control_mean" in r \
            else ("—", "—")
        lines.append(f"| {m} | {_num(r['before'])} | {_num(r['after'])} | {_num(r['delta'], True)} | {ctl[0]} | {ctl[1]} |")
    lines += ["", f"{res['evaluations']} evaluations ({res['draws']} control draws) in {res['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def write(out: str | Path, res: dict, stem: str = "ablation") -> None:
    atomic_write(Path(out) / f"{stem}.json", json.dumps(res, indent=1))
    atomic_write(Path(out) / f"{stem}.md", markdown(res))


def load_for_ablation(model_or_run: str, task: str | None, device: str = "auto", dtype: str | None = None,
                      trust_remote_code: bool = False, allow_pickle: bool = False):
    """(model, tokenizer, task or None): a run with its own task, or a model with ``--task CONFIG.yaml``."""
    from dataclasses import replace

    from ..devices import place
    from ..runs import RunDir

    if RunDir(model_or_run).exists():
        from ..experiment import load_run

        cfg, run_task, model, tok = load_run(model_or_run, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        if task and task != "corpus":
            run_task = _task_from_config(task, tok)
        model, _ = place(model, device, dtype)
        return model.eval(), tok, (None if task == "corpus" else run_task)
    if task in (None, "corpus"):
        from .common import load_any

        head = "causal_lm" if _is_causal(model_or_run, trust_remote_code) else "encoder"
        _, model, tok = load_any(model_or_run, head=head, device=device, dtype=dtype,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        return model, tok, None
    from ..config import load_config
    from ..models import load_model

    cfg = load_config(task)
    spec = replace(cfg.model, name=model_or_run, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    from ..config import build_plugin
    from ..tasks import TASKS

    t = build_plugin(TASKS, cfg.task)
    num_labels = t.num_labels() if spec.head == "classification" else None
    model, tok = load_model(spec, num_labels=num_labels, problem_type=getattr(t, "problem_type", None))
    t.setup(tok)
    model, _ = place(model, device, dtype)
    return model.eval(), tok, t


def _task_from_config(path: str, tok):
    from ..config import build_plugin, load_config
    from ..tasks import TASKS

    t = build_plugin(TASKS, load_config(path).task)
    t.setup(tok)
    return t


def _is_causal(name: str, trust_remote_code: bool) -> bool:
    from transformers import AutoConfig

    from ..models import resolve_name

    try:
        cfg = AutoConfig.from_pretrained(resolve_name(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return False
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (cfg.architectures or []))


def run_ablate(a) -> dict:
    """The ``analyze ablate`` command (argparse namespace ``a``)."""
    from .common import read_corpus
    from .neuron_analysis import BUILTIN_CONCEPTS, BUILTIN_CORPUS, read_concepts

    model, tok, task = load_for_ablation(a.model, a.task, a.device, a.dtype, a.trust_remote_code, a.allow_pickle)
    sets = parse_units(model, a.units)
    reference = [t for _, t, _ in read_corpus(a.reference or BUILTIN_CORPUS, a.text_field)] if a.method != "zero" else None
    ab = Ablator(model, tok, sets, a.method, reference, a.seed, a.batch_size)
    if task is None:
        texts = [t for _, t, _ in read_corpus(a.corpus or BUILTIN_CORPUS, a.text_field)]
        concepts = read_concepts(a.concepts or BUILTIN_CONCEPTS)
        evaluate = CorpusEval(model, tok, texts, concepts, a.batch_size)
    else:
        def evaluate(m):
            return task.evaluate(m, "eval", a.batch_size)
    from ..runs import describe_input, output_set

    res = ab.run(evaluate, a.draws)
    res["model"] = a.model
    with output_set(a.out, {"model": describe_input(a.model), "units": a.units, "method": a.method,
                            "task": a.task, "draws": a.draws}) as out:
        write(out, res)
    return res


def ablate_concepts(a) -> str:
    """``analyze neurons --ablate-top K``: per concept, ablate its top-K neurons (from the analysis just
    written to ``a.out``) and compare with K random neurons of the layer. A run is measured on its own
    task; a model on the corpus (loss for a causal LM, embedding shift otherwise), concept sentences vs
    the others. Writes ``<out>/ablation/`` (``ablation.md``, ``ablation_<concept>.json/.md``, its own
    manifest); returns the Markdown table."""
    from .ablate_units import neuron_file_units
    from .common import read_corpus
    from .neuron_analysis import BUILTIN_CONCEPTS, BUILTIN_CORPUS, read_concepts

    model, tok, task = load_for_ablation(a.model, None, a.device, a.dtype, a.trust_remote_code, a.allow_pickle)
    concepts = read_concepts(a.concepts or BUILTIN_CONCEPTS)
    texts = [t for _, t, _ in read_corpus(a.corpus or BUILTIN_CORPUS, a.text_field)]
    if task is None:
        evaluate = CorpusEval(model, tok, texts, concepts, min(a.batch_size, 64))
    else:
        def evaluate(m):
            return task.evaluate(m, "eval", a.batch_size)
    reference = texts if a.ablate_method != "zero" else None
    from ..runs import describe_input, output_set

    with output_set(Path(a.out) / "ablation", {"model": describe_input(a.model), "top": a.ablate_top,
                                               "method": a.ablate_method, "draws": a.draws}) as out:
        return _concept_rows(a, model, tok, task, evaluate, concepts, reference, out)


def _selectivity(c: str, k: int, inside: dict, outside: dict) -> str:
    """Row: change on the concept's sentences minus the change on the others, ablated vs per control draw."""
    sel = inside["delta"] - outside["delta"]
    if "control_deltas" not in inside:
        return f"| {c} | {k} | selectivity (concept − others) | — | {_num(sel, True)} | — | — |"
    cs = np.array(inside["control_deltas"]) - np.array(outside["control_deltas"])
    sd = cs.std(ddof=1) if cs.size > 1 else 0.0
    return (f"| {c} | {k} | selectivity (concept − others) | — | {_num(sel, True)} | {_num(cs.mean(), True)} ± {_num(sd)} | "
            f"{np.mean(cs >= sel - 1e-12):.0%} |")


def _concept_rows(a, model, tok, task, evaluate, concepts, reference, out: Path) -> str:
    from .ablate_units import neuron_file_units

    rows = []
    for c in concepts:
        ids, layer = neuron_file_units(a.out, a.ablate_top, c, f"--ablate-top {a.ablate_top} ({c})")
        sets = parse_units(model, f"{layer}:{','.join(map(str, ids))}")
        res = Ablator(model, tok, sets, a.ablate_method, reference, seed=0, batch_size=min(a.batch_size, 64)).run(
            evaluate, a.draws, progress=False)
        res.update(model=a.model, concept=c, neurons=ids)
        write(out, res, f"ablation_{''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in c)}")
        keys = [f"{evaluate.name}[{c}]", f"{evaluate.name}[not {c}]"] if task is None else list(res["metrics"])
        for k in keys:
            r = res["metrics"].get(k)
            if r:
                ctl = f"{_num(r['control_mean'], True)} ± {_num(r['control_sd'])}" if "control_mean" in r else "—"
                share = f"{r['control_at_least']:.0%}" if "control_mean" in r else "—"
                rows.append(f"| {c} | {len(ids)} | {k} | {_num(r['before'])} | {_num(r['delta'], True)} | {ctl} | {share} |")
        if task is None and all(k in res["metrics"] for k in keys):
            rows.append(_selectivity(c, len(ids), *(res["metrics"][k] for k in keys)))
    md = "\n".join([f"Ablating each concept's top-{a.ablate_top} neurons ({a.ablate_method}) vs {a.draws} draws of as "
                    "many random neurons of the same layer:", "",
                    "| concept | neurons | metric | before | change (top-K ablated) | change (random K), mean ± sd | "
                    "random draws changing it at least as much |", "|---|---|---|---|---|---|---|", *rows]) + "\n"
    atomic_write(out / "ablation.md", md)
    return md
