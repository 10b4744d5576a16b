"""Attention probabilities for models that do not use transformers' attention interface.

Models that call their attention through the interface get their probabilities from
:mod:`guidetune.layers.interface`. The rest get one small adapter each here, picked by the family's
``attention`` field (:mod:`guidetune.layers.families`):

* ``dropout`` (GPT-J, BLOOM, DeBERTa-v2): the model always forms the probabilities in eager code and
  passes them through its attention-dropout module; the module's input *is* the probability tensor
  (DeBERTa's disentangled c2p/p2c terms included), so nothing is recomputed.
* ``bert`` (BERT-like, ALBERT), ``distilbert``, ``t5``, ``falcon``: the model may run SDPA, which never
  materialises the probabilities, so we hook the query/key projections of the requested modules only and
  rebuild ``softmax(q k^T * scale + bias)`` for the requested heads; every layer keeps its own fast
  implementation. BERT's ``relative_key``/``relative_key_query`` position scores are added; T5's position
  bias (which holds its mask) is read from the module's output; Falcon's rotary embeddings are applied
  with Falcon's own function.

``guidetune ls layers MODEL --verify`` and the family tests check every adapter against eager attention.
Attention dropout is not applied: the probabilities are the pre-dropout ones, which is what a guidance
target should be compared with.

Gradient checkpointing: the hooks here only take views of the projections, except Falcon's rotary
embedding and BERT's relative position scores, which run inside the block; those two cannot be combined
with ``train.gradient_checkpointing`` for an ``attn.probs`` loss (the recomputed block does not redo them).
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
    """What is needed to rebuild one attention module's probabilities (or the probabilities themselves)."""

    q: torch.Tensor  # [batch, head, query, dim]; for ``full`` only its shape [batch, head, query, ...] is used
    k: torch.Tensor | None  # [batch, head, key, dim]
    scale: float = 1.0
    mask: torch.Tensor | None = None  # additive float [b|1, 1|h, q|1, k] or boolean (True = attend)
    bias: torch.Tensor | None = None  # additive float bias added to the scores (T5 bias, BERT relative scores)
    causal: bool = False
    softcap: float | None = None  # Gemma-2: scores = softcap * tanh(scores / softcap) before the mask
    full: torch.Tensor | None = None  # probabilities the model formed itself [batch, head, query, key]
    kv_groups: int = 1  # grouped-query attention: query heads per key head (k has num_heads / kv_groups heads)

    @property
    def num_heads(self) -> int:
        return self.q.shape[1]

    def probs(self, heads: list[int] | None = None) -> torch.Tensor:
        """Attention probabilities, float32, [batch, len(heads), query, key]."""
        if self.full is not None:
            p = self.full if heads is None else self.full[:, heads]
            return p.float()
        q, k = self.q, self.k
        if heads is not None:  # query head h reads key head h // kv_groups
            q, k = q[:, heads], k[:, [h // self.kv_groups for h in heads]]
        elif self.kv_groups > 1:
            k = k.repeat_interleave(self.kv_groups, dim=1)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale
        if self.softcap:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        lowest = torch.finfo(scores.dtype).min
        for extra in (self.bias, self.mask if self.mask is not None and not self.mask.dtype == torch.bool else None):
            if extra is not None:
                if heads is not None and extra.dim() == 4 and extra.shape[1] > 1:
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


def _arg(state: dict, key: str, pos: int | None):
    if key in state["kwargs"]:
        return state["kwargs"][key]
    if pos is not None and len(state["args"]) > pos:
        return state["args"][pos]
    return None


def _install(module: nn.Module, q_mod: nn.Module, k_mod: nn.Module, finish: Callable, store: Store) -> list:
    """Hooks: q/k projection outputs, the attention module's call arguments, then ``finish`` at its output.

    When ``q_mod is k_mod`` (a fused q|k|v projection) the one output is kept under both keys.
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
    """BERT-like and ALBERT self-attention (absolute, relative_key and relative_key_query positions)."""
    n = module.num_attention_heads
    q, k = _heads(state["q"], n), _heads(state["k"], n)
    bias = None
    kind = getattr(module, "position_embedding_type", "absolute")
    if kind in ("relative_key", "relative_key_query"):
        # BertSelfAttention's relative scores (Shaw et al. 2018, as in transformers' eager code)
        length = q.shape[2]
        pos = torch.arange(length, device=q.device)
        dist = module.distance_embedding(pos[:, None] - pos[None, :] + module.max_position_embeddings - 1)
        dist = dist.to(q.dtype)
        bias = torch.einsum("bhld,lrd->bhlr", q, dist)
        if kind == "relative_key_query":
            bias = bias + torch.einsum("bhrd,lrd->bhlr", k, dist)
        if not type(module).__name__.startswith("Albert"):  # BERT scales them with q k^T; ALBERT adds them after
            bias = bias / math.sqrt(module.attention_head_size)
    return AttnInputs(q=q, k=k, scale=1.0 / math.sqrt(module.attention_head_size),
                      mask=_arg(state, "attention_mask", 1), bias=bias)


def _distilbert(module, state, out) -> AttnInputs:
    n = module.n_heads
    mask = _arg(state, "mask", 3)
    if mask is not None and mask.dim() == 2:  # eager: [batch, key], 1 = attend
        mask = (mask != 0)[:, None, None, :]
    return AttnInputs(q=_heads(state["q"], n), k=_heads(state["k"], n), scale=1.0 / math.sqrt(module.dim // n),
                      mask=mask)


def _t5(module, state, out) -> AttnInputs:
    n = module.n_heads
    # T5's position bias (out[1]) already holds the padding (and, in the decoder, causal) mask.
    return AttnInputs(q=_heads(state["q"], n), k=_heads(state["k"], n), scale=1.0, bias=out[1])


def _falcon(module, state, out) -> AttnInputs:
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    q, k, _ = module._split_heads(state["q"])  # [batch, seq, heads, dim]
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    cos, sin = _arg(state, "position_embeddings", None)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    mask = _arg(state, "attention_mask", 2)
    causal = mask is None and q.shape[2] > 1
    if mask is not None:
        mask = mask[:, :, :, : k.shape[-2]]
    return AttnInputs(q=q, k=k, scale=1.0 / math.sqrt(module.head_dim), mask=mask, causal=causal,
                      kv_groups=q.shape[1] // k.shape[1])


def _dropout(module: nn.Module, store: Store) -> list:
    """The input of the attention-dropout module is the probability tensor [batch, head, query, key]."""

    def grab(m, args):
        p = args[0]
        store(AttnInputs(q=p, k=None, full=p))

    return [module.register_forward_pre_hook(grab)]


def install_attention_hooks(source: str, module: nn.Module, store: Store) -> list:
    """Register the hooks that rebuild ``module``'s attention; returns the hook handles.

    ``source`` is the family's ``attention`` field (or, for backward compatibility, a family name)."""
    if source == "bert":
        return _install(module, module.query, module.key, _bert, store)
    if source == "distilbert":
        return _install(module, module.q_lin, module.k_lin, _distilbert, store)
    if source == "t5":
        return _install(module, module.q, module.k, _t5, store)
    if source == "falcon":
        return _install(module, module.query_key_value, module.query_key_value, _falcon, store)
    if source == "dropout":
        return _dropout(module, store)
    raise KeyError(source)
