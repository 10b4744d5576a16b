"""Diagonal empirical Fisher information: F = (1/N) sum_n (d log p(y_n | x_n; theta) / d theta)^2.

Per-sample gradients are computed a batch at a time from module hooks, not one sample at a time:
for every Linear / GPT-2 Conv1D layer the per-sample weight gradient is sum_t g_t a_t^T (output
gradient times input, summed over the sample's positions); for an Embedding only the rows the sample
touches are formed (scatter-add of the output gradients); LayerNorm and RMSNorm (LLaMA, T5) use the
normalised input. Parameters shared by several modules (tied input/output embeddings) get the *sum*
of the modules' per-sample contributions before squaring, so they are counted once. The batch loss is
the sum of per-sample negative log-likelihoods, so one backward pass yields every sample's gradients.
Written by hand because no maintained library computes per-sample squared gradients of Hugging Face
models at this cost (torch.func.vmap does not trace through these models' data-dependent masking,
and Opacus/BackPACK do not support Conv1D or tied weights without rewriting the model).

Accumulation is streaming (float64 running sums, memory O(parameters)); dropout is off (eval mode).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GuidetuneError


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D"


def _is_rmsnorm(m: nn.Module) -> bool:
    return type(m).__name__ in ("T5LayerNorm", "LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")


def supported(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.Embedding, nn.LayerNorm)) or _is_conv1d(m) or _is_rmsnorm(m)


class PerSampleSquaredGrads:
    """Hooks a model so that after ``loss.sum().backward()`` it can add sum_b (per-sample grad)^2 to totals.

    ``totals``: {parameter name: float64 tensor}. Parameters of modules it does not support are listed
    in ``uncovered`` (they need the slow per-sample loop).
    """

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter]):
        self.model = model
        self.by_id = {id(p): n for n, p in params.items()}
        self.totals = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
        owners: dict[int, int] = {}
        self.modules = []
        for m in model.modules():
            if supported(m):
                own = [p for p in m.parameters(recurse=False) if id(p) in self.by_id]
                if own:
                    self.modules.append(m)
                    for p in own:
                        owners[id(p)] = owners.get(id(p), 0) + 1
        covered = {self.by_id[i] for i in owners}
        self.uncovered = [n for n in params if n not in covered]
        self.shared = {i for i, c in owners.items() if c > 1}
        self._records: list = []
        self._handles: list = []
        # Reused output buffers of the per-sample weight gradients ([batch, out, in], up to ~75 MB each for
        # MiniLM's FFN at batch 32): a fresh allocation of that size costs page faults every batch, which
        # took as long as the matrix products themselves (benchmarks/fisher_speed.py).
        self._buffers: dict[tuple, torch.Tensor] = {}
        self.batch_size = 1  # set by the caller before each forward
        # Embeddings whose output has no batch dimension (T5's relative position bias) mix all samples'
        # gradients in one tensor; with them, samples must go one at a time.
        self.needs_single = any(type(m).__name__ == "T5Attention" and getattr(m, "has_relative_attention_bias", False)
                                and id(m.relative_attention_bias.weight) in self.by_id for m in model.modules())

    def __enter__(self):
        for m in self.modules:
            self._handles.append(m.register_forward_hook(self._forward))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles, self._records = [], []

    def _forward(self, module, args, out):
        inp = args[0].detach()
        b = self.batch_size
        if isinstance(module, nn.Embedding) and out.dim() == 3 and out.shape[0] == 1 and b > 1:
            # Broadcast lookups (position ids [1, seq]): give every sample its own copy, so the gradient
            # that flows back is per sample instead of summed over the batch.
            out = out.expand(b, *out.shape[1:])
            inp = inp.expand(b, *inp.shape[1:])
        rec = {"module": module, "input": inp}
        self._records.append(rec)
        if out.requires_grad:
            out.register_hook(lambda g: rec.__setitem__("grad", g.detach()))
        return out

    def accumulate(self, batch_size: int) -> None:
        """Square and add the per-sample gradients of the last backward pass."""
        dense: dict[int, torch.Tensor] = {}  # shared parameters: per-sample grads summed over modules
        for rec in self._records:
            if "grad" not in rec:
                continue
            for p, per_sample in self._contributions(rec, batch_size):
                if id(p) in self.shared:
                    dense[id(p)] = dense[id(p)] + per_sample if id(p) in dense else per_sample
                else:
                    self._add(p, per_sample)
        for pid, per_sample in dense.items():
            self.totals[self.by_id[pid]] += per_sample.double().pow(2).sum(0)
        self._records = []

    def _add(self, p, per_sample) -> None:
        name = self.by_id[id(p)]
        if isinstance(per_sample, tuple):  # sparse embedding rows: (row ids, [rows, dim] squared sums)
            rows, sq = per_sample
            self.totals[name].index_add_(0, rows, sq.double())
        else:
            # Square in place and sum over the batch in float32 (the per-sample tensor is a temporary);
            # only the running total is float64. This memory-bound step dominates the cost.
            self.totals[name] += per_sample.square_().sum(0)

    def _contributions(self, rec, b: int):
        m, a, g = rec["module"], rec["input"], rec["grad"]
        out = []
        want = lambda p: p is not None and id(p) in self.by_id  # noqa: E731
        if isinstance(m, nn.Embedding):
            if want(m.weight):
                out.append((m.weight, self._embedding(m, a, g, b, id(m.weight) in self.shared)))
            return out
        # Tied weights (shared) sum several modules' contributions before squaring: do that in float64.
        dtype = torch.float64 if any(id(p) in self.shared for p in m.parameters(recurse=False)) else torch.float32
        a3 = a.reshape(b, -1, a.shape[-1]).to(dtype)
        g3 = g.reshape(b, -1, g.shape[-1]).to(dtype)
        if isinstance(m, nn.Linear):
            if want(m.weight):
                out.append((m.weight, self._bmm(g3.transpose(1, 2), a3, id(m.weight) in self.shared)))
            if want(m.bias):
                out.append((m.bias, g3.sum(1)))
        elif _is_conv1d(m):
            if want(m.weight):
                out.append((m.weight, self._bmm(a3.transpose(1, 2), g3, id(m.weight) in self.shared)))
            if want(m.bias):
                out.append((m.bias, g3.sum(1)))
        elif isinstance(m, nn.LayerNorm):
            mu = a3.mean(-1, keepdim=True)
            var = a3.var(-1, unbiased=False, keepdim=True)
            xhat = (a3 - mu) / torch.sqrt(var + m.eps)
            if want(m.weight):
                out.append((m.weight, (g3 * xhat).sum(1)))
            if want(m.bias):
                out.append((m.bias, g3.sum(1)))
        elif _is_rmsnorm(m) and want(m.weight):
            xhat = a3 * torch.rsqrt(a3.pow(2).mean(-1, keepdim=True) + m.variance_epsilon)
            out.append((m.weight, (g3 * xhat).sum(1)))
        return out

    def _bmm(self, x: torch.Tensor, y: torch.Tensor, shared: bool) -> torch.Tensor:
        """x @ y per sample; unshared parameters' results go to a reused buffer (consumed by ``_add``
        before the next record is processed); shared ones are kept across records, so they get their own."""
        if shared:
            return torch.bmm(x, y)
        key = (x.shape[0], x.shape[1], y.shape[2], x.dtype, x.device)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty(key[:3], dtype=x.dtype, device=x.device)
        return torch.bmm(x, y, out=buf)

    @staticmethod
    def _embedding(m: nn.Embedding, ids, g, b: int, dense: bool):
        ids = ids.reshape(b, -1)
        g = g.reshape(b, ids.shape[1], -1).to(torch.float64 if dense else torch.float32)
        if m.padding_idx is not None:  # like PyTorch, the padding row gets no gradient
            g = g * (ids != m.padding_idx)[..., None]
        if dense:
            full = torch.zeros(b, m.num_embeddings, g.shape[-1], dtype=g.dtype, device=g.device)
            return full.index_put_((torch.arange(b, device=g.device)[:, None].expand_as(ids), ids), g, accumulate=True)
        keys = (torch.arange(b, device=ids.device)[:, None] * m.num_embeddings + ids).reshape(-1)
        uniq, inv = torch.unique(keys, return_inverse=True)
        rows = torch.zeros(uniq.numel(), g.shape[-1], dtype=g.dtype, device=g.device)
        rows.index_add_(0, inv, g.reshape(-1, g.shape[-1]))  # per (sample, row) gradient
        return (uniq % m.num_embeddings, rows.pow(2))


_WRAPPER_PARTS = (".base_layer", ".original_module")  # PEFT's wrappers around the original modules
_ADDED = ("lora_", ".modules_to_save.", ".adapters.", "adapter_")  # parameters a fine-tune mode adds


def original_name(name: str) -> str | None:
    """The pretrained model's name of a parameter seen through PEFT/AdapterHub wrapping (None if added)."""
    if any(part in name for part in _ADDED):
        return None
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def check_compatible(fisher_names: dict[str, tuple], model_params: dict[str, tuple], source: str) -> None:
    """One line naming the parameters that differ between a Fisher file and the model at hand."""
    missing = [n for n in model_params if n not in fisher_names]
    extra = [n for n in fisher_names if n not in model_params]
    shape = [n for n in model_params if n in fisher_names and tuple(fisher_names[n]) != tuple(model_params[n])]
    if missing or extra or shape:
        parts = []
        if shape:
            n = shape[0]
            parts.append(f"{len(shape)} differ in shape (e.g. {n}: {list(fisher_names[n])} in the file, "
                         f"{list(model_params[n])} in the model)")
        if missing:
            parts.append(f"{len(missing)} are missing from the file (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} are not in the model (e.g. {extra[0]})")
        raise GuidetuneError(f"Fisher file '{source}' was computed for a different model: " + "; ".join(parts))
