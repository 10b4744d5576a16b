"""Diagonal empirical Fisher information: F = (1/N) sum_n (d log p(y_n | x_n; theta) / d theta)^2.

Per-sample gradients are computed a batch at a time from what every module saw in the forward pass and
the gradient of its output, not one sample at a time (rules in ``fisher_rules``). A parameter used more
than once in a forward -- a weight tied between the input embedding and the LM head, T5 v1.1's ``shared``
embedding called by encoder and decoder, ALBERT's layers shared by every block -- gets the *sum* of its
uses' per-sample gradients before squaring. The batch loss is the sum of per-sample negative
log-likelihoods, so one backward pass yields every sample's gradients.

Why not ``torch.func.vmap(grad(...))`` over the whole model: measured on transformers 4.57, it fails on
LLaMA, GPT-2 and BERT (their mask construction is data-dependent control flow, which vmap refuses); it
is used here only on single modules (norms and other modules without a closed-form rule), where it is exact.

Before estimating, ``probe`` checks every rule numerically on one sample against autograd: a parameter
that gets a gradient without a rule (used outside its module's forward, e.g. DeBERTa's relative
embeddings read as ``.weight``) or whose rule disagrees is refused up front, by name.

Accumulation is streaming (float64 running sums, memory O(parameters)); dropout is off (eval mode).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from ..errors import GuidetuneError
from . import fisher_rules as rules


class MixedBatch(Exception):
    """A module's output has no batch dimension: samples must go one at a time."""


class PerSampleSquaredGrads:
    """Hooks a model so that after a backward of ``nll.sum()`` it adds sum_b (per-sample grad)^2 to totals.

    ``totals``: {parameter name: float64 tensor}. Set ``batch_size`` before each forward.
    """

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], totals: bool = True):
        self.model = model
        self.by_id = {id(p): n for n, p in params.items()}
        self.totals = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()} if totals else {}
        self.modules = [m for m in model.modules() if not isinstance(m, nn.Embedding)
                        and any(id(p) in self.by_id for p in m.parameters(recurse=False))]
        self.embeddings = {id(m) for m in model.modules() if isinstance(m, nn.Embedding) and id(m.weight) in self.by_id}
        # Embeddings whose output has no batch dimension (T5's relative position bias [q, k, heads]) mix all
        # samples' gradients in one tensor; with them, samples must go one at a time.
        self.needs_single = any(
            isinstance(m, nn.Embedding) and id(m.weight) in self.by_id and name.endswith("relative_attention_bias")
            for name, m in model.named_modules())
        self._records: list = []
        self._handles: list = []
        self.batch_size = 1
        self.keep_sums = False  # probe: keep the unsquared gradients summed over the batch instead of squares
        self.sums: dict[int, torch.Tensor] = {}
        self._paused = False
        self.direct: dict[str, nn.Parameter] = {}  # estimated by autograd on the parameter (batch of one)

    # -- recording ---------------------------------------------------------------------------------------
    def __enter__(self):
        for m in self.modules:
            self._handles.append(m.register_forward_hook(self._forward, with_kwargs=True))
        self._patch = _patch_embedding(self)
        self._patch.__enter__()
        return self

    def __exit__(self, *exc):
        self._patch.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles, self._records = [], []

    def _record(self, module, kind, args, kwargs, out):
        if self._paused:  # the rules' own calls of a module (torch.func) are not part of the forward
            return out
        b = self.batch_size
        if not torch.is_tensor(out):  # no rule: its parameters show up as "direct" in the probe
            return out
        broadcast = False
        if b > 1 and (out.dim() == 0 or out.shape[0] != b):
            if out.dim() == 0 or out.shape[0] != 1:
                raise MixedBatch(type(module).__name__)
            # Broadcast output (position ids [1, seq]): give every sample its own copy, so the gradient that
            # flows back is per sample instead of summed over the batch.
            out = out.expand(b, *out.shape[1:])
            broadcast = True
        rec = {"module": module, "kind": kind, "args": args, "kwargs": kwargs, "broadcast": broadcast, "out": out}
        self._records.append(rec)
        if out.requires_grad:
            out.register_hook(lambda g: rec.__setitem__("grad", g.detach()))
        return out

    def _forward(self, module, args, kwargs, out):
        kind = rules.rule_of(module)
        args = tuple(a.detach() if torch.is_tensor(a) else a for a in args)
        kwargs = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        new = self._record(module, kind, args, kwargs, out)
        return new if new is not out else None

    # -- accumulation ------------------------------------------------------------------------------------
    def accumulate(self, batch_size: int) -> None:
        """Square and add the per-sample gradients of the last backward pass."""
        b = batch_size
        self._paused = True
        try:
            self._accumulate(b)
        finally:
            self._paused = False
            self._records = []

    def _accumulate(self, b: int) -> None:
        recs = [r for r in self._records if "grad" in r]
        uses: dict[int, int] = {}
        for r in recs:
            for p in self._owned(r["module"], r["kind"]):
                uses[id(p)] = uses.get(id(p), 0) + 1
        multi: dict[int, list] = {}
        for r in recs:
            for p, c in self._contributions(r, b, lambda p: uses.get(id(p), 0) > 1):
                if uses[id(p)] > 1 or self.keep_sums:
                    multi.setdefault(id(p), []).append((p, c))
                else:
                    self._add(p, c, b)
        for pid, cs in multi.items():
            p = cs[0][0]
            if self.keep_sums:
                self.sums[pid] = _batch_sum(p, [c for _, c in cs])
                continue
            if all(c[0] == "rows" for _, c in cs):
                self._add(p, ("rows", torch.cat([c[1] for _, c in cs]), torch.cat([c[2] for _, c in cs])), b)
                continue
            dense = torch.zeros(b, *p.shape, dtype=torch.float64, device=p.device)
            for _, c in cs:
                if c[0] == "rows":
                    dense.view(b * p.shape[0], -1).index_add_(0, c[1], c[2].double())
                else:
                    dense += c[1]
            self._add(p, ("dense", dense), b)

    def outputs(self) -> list[torch.Tensor]:
        """Every recorded module output: a backward to these (not to the parameters) fires all the hooks
        without spending time on the parameters' own batch gradients, which are not needed."""
        return [r["out"] for r in self._records if r["out"].requires_grad]

    def _owned(self, m, kind):
        return [p for p in m.parameters(recurse=False) if id(p) in self.by_id]

    def _contributions(self, r, b, is_multi):
        m, g = r["module"], r["grad"]
        want = lambda p: p is not None and id(p) in self.by_id  # noqa: E731

        def dtype(p):
            return torch.float64 if (is_multi(p) or p.dtype == torch.float64) else torch.float32

        a = r["args"][0] if r["args"] else None
        if r["broadcast"] and r["kind"] != "generic" and torch.is_tensor(a):
            a = a.expand(b, *a.shape[1:])
        if r["kind"] == "embedding":
            return rules.embedding(m, a, g, b, want, dtype(m.weight))
        if r["kind"] == "linear":
            if want(m.weight) and not (is_multi(m.weight) or self.keep_sums):  # squared straight into the total
                rules.linear_squares(m, a, g, b, dtype(m.weight), self.totals[self.by_id[id(m.weight)]])
                return rules.linear(m, a, g, b, lambda p: p is not m.weight and want(p), dtype(m.weight), torch.bmm)
            return rules.linear(m, a, g, b, want, dtype(m.weight), torch.bmm)
        if r["kind"] == "layernorm":
            return rules.layernorm(m, a, g, b, want, dtype(m.weight))
        p0 = next(p for p in m.parameters(recurse=False) if want(p))
        return rules.generic(m, r["args"], r["kwargs"], g, b, want, dtype(p0), r["broadcast"] or b == 1)

    def _add(self, p, c, b) -> None:
        name = self.by_id[id(p)]
        if c[0] == "rows":
            keys, g = c[1], c[2]
            uniq, inv = torch.unique(keys, return_inverse=True)
            rows = torch.zeros(uniq.numel(), g.shape[-1], dtype=g.dtype, device=g.device)
            rows.index_add_(0, inv, g)  # per (sample, row) gradient
            self.totals[name].index_add_(0, uniq % p.shape[0], rows.pow(2).double())
        else:
            # Square in place and sum over the batch (the per-sample tensor is a temporary); only the running
            # total is float64. Linear weights used once skip this: ``rules.linear_squares``.
            self.totals[name] += c[1].square_().sum(0)


def _batch_sum(p, cs):
    """The gradient summed over the batch from contributions ``cs``; float64 only where several uses add up."""
    if len(cs) == 1 and cs[0][0] == "dense":
        return cs[0][1].sum(0)
    dt = cs[0][-1].dtype if len(cs) == 1 else torch.float64
    out = torch.zeros(p.shape, dtype=dt, device=p.device)
    for c in cs:
        if c[0] == "rows":
            out.index_add_(0, c[1] % p.shape[0], c[2].to(dt))
        else:
            out += c[1].sum(0)
    return out


@contextlib.contextmanager
def _patch_embedding(psg: PerSampleSquaredGrads):
    """Record every ``nn.Embedding.forward`` call of the hooked model (subclasses reach it through super())."""
    orig = nn.Embedding.forward

    def forward(self, input):
        out = orig(self, input)
        if id(self) not in psg.embeddings:
            return out
        return psg._record(self, "embedding", (input.detach(),), {}, out)

    nn.Embedding.forward = forward
    try:
        yield
    finally:
        nn.Embedding.forward = orig


def probe(model: nn.Module, params: dict[str, nn.Parameter], nll_of_one) -> tuple[list[str], list[str]]:
    """Every rule checked numerically on one sample against autograd: (wrong, direct) parameter names.

    ``nll_of_one()`` runs the model on one sample and returns its [1] negative log-likelihood. ``wrong``:
    a rule fired and disagrees (refused). ``direct``: the parameter gets a gradient but no module call
    used it (read as ``.weight`` outside its module's forward, like DeBERTa's relative embeddings); those
    are estimated exactly with a batch of one sample (autograd on the parameter itself).
    """
    psg = PerSampleSquaredGrads(model, params, totals=False)
    psg.keep_sums = True
    psg.batch_size = 1
    with psg:
        nll = nll_of_one()
        names = list(params)
        grads = torch.autograd.grad(nll.sum(), [params[n] for n in names], allow_unused=True, retain_graph=False)
        psg.accumulate(1)
    bad, direct = [], []
    # Compared in the parameters' dtype (float64 only where uses are summed): a 30k-token LM head's float64
    # copies took most of the check's time.
    big = {n: _max_abs(g) for n, g in zip(names, grads) if g is not None}
    # Exactly-zero gradients (attention key biases) come out as rounding noise: judged against the model's scale
    top = max(big.values(), default=1.0)
    for n, g in zip(names, grads):
        if g is None:
            continue
        scale = max(big[n], 1e-4 * top)
        got = psg.sums.get(id(params[n]))
        if got is None:
            if big[n] > 1e-3 * scale:
                direct.append(n)
            continue
        if _max_abs(got - g.to(got.dtype)) > 1e-3 * scale:
            bad.append(n)
    return bad, direct


def _max_abs(t: torch.Tensor) -> float:
    """max |t| (``aminmax`` is one vectorised pass; ``abs().max()`` and the inf-norm were 4-6x slower on CPU)."""
    if not t.numel():
        return 0.0
    lo, hi = torch.aminmax(t)
    return max(-float(lo), float(hi))


def structural_rules(model: nn.Module) -> dict[str, str]:
    """{parameter name: rule} for every parameter (what ``guidetune ls models`` can show without data)."""
    out = {}
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            out[f"{mname}.{pname}" if mname else pname] = rules.rule_of(m)
    return out

