"""Attention probabilities recomputed from captured queries and keys, one small adapter per family.

Why recompute: the fast kernels (SDPA, flash) never materialise the [batch, head, query, key]
probabilities, and asking Hugging Face for ``output_attentions=True`` switches *every* layer to the
slow eager path. Instead we hook the query/key projections of the requested attention modules only and
rebuild ``softmax(q k^T * scale + bias)`` for the requested heads, while every layer, including the
hooked ones, keeps running its own (fast) implementation. The recomputation costs one extra
[query x key] matmul and softmax per requested head; the test suite checks it equals eager attention
to 1e-5 for BERT, GPT-2, LLaMA and T5 (self- and cross-attention).

Attention dropout is not applied: the probabilities are the pre-dropout ones, which is what a guidance
target should be compared with.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

Store = Callable[["AttnInputs"], None]


@dataclass
class AttnInputs:
    """What is needed to rebuild one attention module's probabilities."""

    q: torch.Tensor  # [batch, head, query, dim]
    k: torch.Tensor  # [batch, head, key, dim]
    scale: float
    mask: torch.Tensor | None = None  # additive float [b|1, 1|h, q|1, k] or boolean (True = attend)
    bias: torch.Tensor | None = None  # additive float bias already containing the mask (T5)
    causal: bool = False

    @property
    def num_heads(self) -> int:
        return self.q.shape[1]

    def probs(self, heads: list[int] | None = None) -> torch.Tensor:
        """Attention probabilities, float32, [batch, len(heads), query, key]."""
        q, k = self.q, self.k
        if heads is not None:
            q, k = q[:, heads], k[:, heads]
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale
        lowest = torch.finfo(scores.dtype).min
        for extra in (self.bias, self.mask if self.mask is not None and not self.mask.dtype == torch.bool else None):
            if extra is not None:
                if heads is not None and extra.shape[1] > 1:
                    extra = extra[:, heads]
                scores = scores + extra.float()
        if self.mask is not None and self.mask.dtype == torch.bool:
            m = self.mask if heads is None or self.mask.shape[1] == 1 else self.mask[:, heads]
            scores = scores.masked_fill(~m, lowest)
        if self.causal:
            nq, nk = scores.shape[-2:]
            future = torch.ones(nq, nk, dtype=torch.bool, device=scores.device).triu(nk - nq + 1)
            scores = scores.masked_fill(future, lowest)
        # Large negative masks added twice can reach -inf; clamp so fully masked rows stay finite.
        return torch.softmax(scores.clamp_min(lowest), dim=-1)


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def _mask_from(args: tuple, kwargs: dict, key: str, pos: int | None) -> torch.Tensor | None:
    if key in kwargs:
        return kwargs[key]
    if pos is not None and len(args) > pos:
        return args[pos]
    return None


def _install(module: nn.Module, q_mod: nn.Module, k_mod: nn.Module, finish: Callable, store: Store) -> list:
    """Hooks: q/k projection outputs, the attention module's call arguments, then ``finish`` at its output.

    When ``q_mod is k_mod`` (GPT-2's fused ``c_attn``) the one output is kept under both keys.
    """
    state: dict = {}
    keys = ("q", "k") if q_mod is k_mod else ("q",)
    handles = [
        q_mod.register_forward_hook(lambda m, a, o: state.update(dict.fromkeys(keys, o))),
        module.register_forward_pre_hook(lambda m, a, kw: state.update(args=a, kwargs=kw), with_kwargs=True),
        module.register_forward_hook(lambda m, a, o: _done(module, state, o, finish, store)),
    ]
    if k_mod is not q_mod:
        handles.append(k_mod.register_forward_hook(lambda m, a, o: state.__setitem__("k", o)))
    return handles


def _done(module: nn.Module, state: dict, out, finish: Callable, store: Store) -> None:
    # With a key/value cache (generation) the keys can come from the cache without being recomputed;
    # then there is nothing consistent to rebuild, and nothing is stored.
    if "q" in state and "k" in state:
        store(finish(module, state, out))
    state.clear()


def _bert(module, state, out) -> AttnInputs:
    n = module.num_attention_heads
    return AttnInputs(
        q=_heads(state["q"], n),
        k=_heads(state["k"], n),
        scale=1.0 / math.sqrt(module.attention_head_size),
        mask=_mask_from(state["args"], state["kwargs"], "attention_mask", 1),
    )


def _gpt2(module, state, out) -> AttnInputs:
    q, k, _ = state["q"].split(module.split_size, dim=2)  # fused q|k|v projection
    scale = 1.0 / math.sqrt(module.head_dim) if module.scale_attn_weights else 1.0
    if module.scale_attn_by_inverse_layer_idx:
        scale /= float(module.layer_idx + 1)
    return AttnInputs(
        q=_heads(q, module.num_heads),
        k=_heads(k, module.num_heads),
        scale=scale,
        mask=state["kwargs"].get("attention_mask"),
        causal=not module.is_cross_attention,
    )


def _llama(module, state, out) -> AttnInputs:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    d = module.head_dim
    q = _heads(state["q"], state["q"].shape[-1] // d)
    k = _heads(state["k"], state["k"].shape[-1] // d)
    cos, sin = state["kwargs"]["position_embeddings"]
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return AttnInputs(
        q=q,
        k=repeat_kv(k, module.num_key_value_groups),
        scale=module.scaling,
        mask=state["kwargs"].get("attention_mask"),
        causal=True,
    )


def _t5(module, state, out) -> AttnInputs:
    n = module.n_heads
    # out[1] is T5's position bias, which already holds the padding (and, in the decoder, causal) mask.
    return AttnInputs(q=_heads(state["q"], n), k=_heads(state["k"], n), scale=1.0, bias=out[1])


def install_attention_hooks(family: str, module: nn.Module, store: Store) -> list:
    """Register the hooks that rebuild ``module``'s attention; returns the hook handles."""
    if family == "bert":
        return _install(module, module.query, module.key, _bert, store)
    if family == "gpt2":
        return _install(module, module.c_attn, module.c_attn, _gpt2, store)
    if family == "llama":
        return _install(module, module.q_proj, module.k_proj, _llama, store)
    if family == "t5":
        return _install(module, module.q, module.k, _t5, store)
    raise KeyError(family)
