"""Per-sample gradient rules, one per kind of module, from a module's recorded input and output gradient.

- ``nn.Linear`` (its own forward) and GPT-2's ``Conv1D``: sum_t g_t a_t^T over the sample's positions.
- Every ``nn.Embedding`` lookup, subclasses included (OPT/BART learned positions that take a mask or ids
  and add an offset, BART's scaled word embeddings): ``nn.Embedding.forward`` itself is recorded, so the
  rule sees the ids actually looked up and the gradient of the raw lookup; only the touched rows are formed.
- ``nn.LayerNorm`` (its own forward): closed form with the normalised input.
- Any other module that owns parameters (every RMSNorm variant -- LLaMA, T5, Gemma's ``1 + w``, OLMo,
  Qwen3's q/k norms --, LayerNorm subclasses, Linear subclasses with their own forward, ...): the exact
  vector-Jacobian product of the module's own forward per sample, with ``torch.func`` (``functional_call``
  + ``vjp`` under ``vmap``). This is right whenever the module treats samples independently, which is what
  a batch dimension means; modules whose output has no batch dimension are caught and handled one sample
  at a time by the caller.

A contribution is ``("dense", [b, *shape])`` or ``("rows", keys, grads)`` with ``keys = sample * V + row``.
``linear_squares`` skips the contribution for a weight used once: it adds the squares straight to the total.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_EMBEDDING_FORWARD = nn.Embedding.forward


def is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D"


def own_forward(m: nn.Module, cls: type) -> bool:
    return isinstance(m, cls) and type(m).forward is cls.forward


def rule_of(m: nn.Module) -> str:
    """Which rule covers the parameters a module owns directly."""
    if isinstance(m, nn.Embedding):
        return "embedding"
    if own_forward(m, nn.Linear) or is_conv1d(m):
        return "linear"
    if own_forward(m, nn.LayerNorm):
        return "layernorm"
    return "generic"


def linear(m, a, g, b, want, dtype, bmm):
    out = []
    a3 = a.reshape(b, -1, a.shape[-1]).to(dtype)
    g3 = g.reshape(b, -1, g.shape[-1]).to(dtype)
    if want(m.weight):
        w = bmm(g3.transpose(1, 2), a3) if isinstance(m, nn.Linear) else bmm(a3.transpose(1, 2), g3)
        out.append((m.weight, ("dense", w)))
    if want(getattr(m, "bias", None)):
        out.append((m.bias, ("dense", g3.sum(1))))
    return out


# Per-sample blocks of at most this many floats (1 MB) stay in a core's L2 cache while squared and summed.
CPU_BLOCK = 1 << 18


def linear_squares(m, a, g, b, dtype, total, block: int | None = None) -> None:
    """Adds sum over the batch of the squared per-sample weight gradients to the float64 ``total``.

    The [b, rows, cols] per-sample gradients are formed a few weight rows at a time, each block squared and
    summed over the batch while it is still in cache: an untied LM head's whole [b, 30522, 256] tensor is
    0.5 GB for 16 samples, and writing it out, reading it back to square and sum, then converting the
    float32 sum to float64 in one piece cost twice the products themselves (measured on CPU).
    """
    a3 = a.reshape(b, -1, a.shape[-1]).to(dtype)
    g3 = g.reshape(b, -1, g.shape[-1]).to(dtype)
    left, right = (g3, a3) if isinstance(m, nn.Linear) else (a3, g3)  # weight = left^T right per sample
    left_t = left.transpose(1, 2)  # [b, rows, positions], a view: gemm reads it transposed
    rows, cols = left_t.shape[1], right.shape[2]
    if block is None:
        block = CPU_BLOCK if right.device.type == "cpu" else 1 << 26
    step = max(1, min(rows, block // max(1, b * cols)))
    buf = torch.empty(b, step, cols, dtype=dtype, device=right.device)
    sq = torch.empty(step, cols, dtype=dtype, device=right.device)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        if n == step:
            per_sample = torch.bmm(left_t[:, r0:r0 + n], right, out=buf)
            total[r0:r0 + n] += torch.sum(per_sample.square_(), 0, out=sq)
        else:
            total[r0:r0 + n] += torch.bmm(left_t[:, r0:r0 + n], right).square_().sum(0)


def layernorm(m, a, g, b, want, dtype):
    a3 = a.reshape(b, -1, a.shape[-1]).to(dtype)
    g3 = g.reshape(b, -1, g.shape[-1]).to(dtype)
    xhat = (a3 - a3.mean(-1, keepdim=True)) / torch.sqrt(a3.var(-1, unbiased=False, keepdim=True) + m.eps)
    out = []
    if want(m.weight):
        out.append((m.weight, ("dense", (g3 * xhat).sum(1))))
    if want(m.bias):
        out.append((m.bias, ("dense", g3.sum(1))))
    return out


def embedding(m, ids, g, b, want, dtype):
    if not want(m.weight):
        return []
    ids = ids.reshape(b, -1)
    g = g.reshape(b, ids.shape[1], -1).to(dtype)
    if m.padding_idx is not None:  # like PyTorch, the padding row gets no gradient
        g = g * (ids != m.padding_idx)[..., None]
    keys = (torch.arange(b, device=ids.device)[:, None] * m.num_embeddings + ids).reshape(-1)
    return [(m.weight, ("rows", keys, g.reshape(-1, g.shape[-1])))]


def generic(m, args, kwargs, g, b, want, dtype, broadcast: bool, chunk: int | None = None):
    """Exact per-sample gradients of the parameters ``m`` owns, by torch.func on ``m``'s own forward."""
    from torch.func import functional_call, vjp, vmap

    names = [n for n, p in m.named_parameters(recurse=False) if want(p)]
    if not names:
        return []
    params = {n: getattr(m, n).detach() for n in names}

    def call(pd, a, kw):
        return functional_call(m, pd, a, kw, strict=False)

    if broadcast:  # output shared by the batch (no per-sample input): one vjp, applied to each sample's grad
        out, fn = vjp(lambda pd: call(pd, args, kwargs), params)
        grads = vmap(lambda gg: fn(gg.reshape(out.shape).to(out.dtype))[0], chunk_size=chunk)(g.reshape(b, -1))
    else:
        flat = list(args) + list(kwargs.values())
        batched = [torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == b for x in flat]
        keys = list(kwargs)

        def one(pd, gg, *xs):
            it = iter(xs)
            vals = [next(it).unsqueeze(0) if bt else x for x, bt in zip(flat, batched)]
            a, kw = tuple(vals[: len(args)]), dict(zip(keys, vals[len(args):]))
            _, fn = vjp(lambda p: call(p, a, kw), pd)
            return fn(gg.unsqueeze(0))[0]

        xs = [x for x, bt in zip(flat, batched) if bt]
        grads = vmap(one, in_dims=(None, 0) + (0,) * len(xs), chunk_size=chunk)(params, g, *xs)
    return [(getattr(m, n), ("dense", grads[n].to(dtype))) for n in names]
