"""Attention probabilities through transformers' own attention interface.

Most current models (GPT-2, GPT-NeoX, OPT, Phi, LLaMA, Mistral, Mixtral, Qwen2/3, Gemma/Gemma2,
OLMo/OLMo2, BART, mBART, ...) call ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k,
v, mask, scaling=..., softcap=..., ...)`` with q and k *after* rotary embeddings and q/k norms, the mask
already holding padding, causality and sliding windows. guidetune registers one such function,
``"guidetune"`` (:func:`guidetune_attention`), that

1. calls the implementation the model was using (SDPA, flash, eager, ...) unchanged, and
2. for the modules a :class:`~guidetune.layers.capture.Capture` asked for, hands it an
   :class:`~guidetune.layers.attention.AttnInputs` built from what it was handed (q, k with GQA repeat,
   mask, scaling, softcap), from which the probabilities of the requested heads are computed lazily.

:func:`switched` sets the model's configs to ``"guidetune"`` for the duration of a capture and restores
them; the mask function registered under the same name delegates to the wrapped implementation's mask
function, so the model builds exactly the mask it would have built.
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from .attention import AttnInputs

NAME = "guidetune"
_WRAPPED: dict[int, str] = {}  # id(config) -> the implementation it used before the switch
_STORES: dict[int, list[Callable[[AttnInputs], None]]] = {}  # id(attention module) -> capture callbacks


def _impl(module: nn.Module) -> str:
    return _WRAPPED.get(id(getattr(module, "config", None)), "sdpa")


def _function(module: nn.Module, impl: str) -> Callable:
    if impl == "eager":  # every modeling file keeps its own eager function (softcap, GPT-2's scaling, ...)
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[impl]


def _scale(module: nn.Module, query: torch.Tensor, kwargs: dict) -> float:
    if kwargs.get("scaling") is not None:
        return float(kwargs["scaling"])
    if hasattr(module, "scale_attn_weights"):  # GPT-2 scales inside its eager function
        s = 1.0 / math.sqrt(query.shape[-1]) if module.scale_attn_weights else 1.0
        if getattr(module, "scale_attn_by_inverse_layer_idx", False):
            s /= float(module.layer_idx + 1)
        return s
    return 1.0 / math.sqrt(query.shape[-1])


def inputs_from(module: nn.Module, query, key, attention_mask, impl: str, kwargs: dict) -> AttnInputs:
    """What the attention function was handed, as AttnInputs ([batch, head, seq, dim] q and k).

    No autograd operation runs here, inside the model's forward (gradient checkpointing recomputes the
    forward without this function and must find the same saved tensors): the key-head repeat of grouped
    query attention and the mask slicing happen lazily in :meth:`AttnInputs.probs`."""
    mask, causal = attention_mask, False
    if mask is None:
        # What SDPA/flash do without a mask (eager does not mask at all)
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        causal = impl != "eager" and bool(is_causal) and query.shape[2] > 1
    elif mask.dim() == 4:
        mask = mask[:, :, :, : key.shape[-2]]  # masks do not require grad: slicing records no graph
    elif mask.dim() == 2:  # flash: [batch, key] padding mask, causality from the module
        causal = bool(getattr(module, "is_causal", False)) and query.shape[2] > 1
        mask = mask.bool()[:, None, None, :]
    return AttnInputs(q=query, k=key, scale=_scale(module, query, kwargs), mask=mask, causal=causal,
                      softcap=kwargs.get("softcap"), kv_groups=query.shape[1] // key.shape[1])


def guidetune_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: the wrapped implementation, plus inputs for captures."""
    impl = _impl(module)
    stores = _STORES.get(id(module))
    if stores:
        inp = inputs_from(module, query, key, attention_mask, impl, kwargs)
        for store in stores:
            store(inp)
    return _function(module, impl)(module, query, key, value, attention_mask, **kwargs)


def _mask(**kwargs):
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    impl = _WRAPPED.get(id(kwargs.get("config")), "sdpa")
    return ALL_MASK_ATTENTION_FUNCTIONS[impl](**kwargs)


_registered = False


def register() -> None:
    """Register ``"guidetune"`` with transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, guidetune_attention)
    AttentionMaskInterface.register(NAME, _mask)
    _registered = True


def _configs(model: nn.Module) -> list:
    from transformers import PretrainedConfig

    seen: dict[int, PretrainedConfig] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if isinstance(cfg, PretrainedConfig):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


@contextlib.contextmanager
def switched(model: nn.Module, stores: dict[nn.Module, Callable[[AttnInputs], None]]) -> Iterator[None]:
    """Route ``model``'s attention through ``"guidetune"`` and feed ``stores`` while inside; then restore."""
    register()
    configs = [c for c in _configs(model) if c._attn_implementation != NAME]
    for cfg in configs:
        _WRAPPED[id(cfg)] = cfg._attn_implementation or "eager"
    for module, store in stores.items():
        _STORES.setdefault(id(module), []).append(store)
    try:
        for cfg in configs:
            cfg._attn_implementation_internal = NAME  # not the setter: sub-configs are listed themselves
        yield
    finally:
        for cfg in configs:
            cfg._attn_implementation_internal = _WRAPPED.pop(id(cfg))
        for module, store in stores.items():
            lst = _STORES.get(id(module), [])
            if store in lst:
                lst.remove(store)
            if not lst:
                _STORES.pop(id(module), None)
