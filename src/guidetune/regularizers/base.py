"""The regularizer protocol and registry.

A regularizer is a dataclass of its parameters registered by name, with two methods:

* ``setup(model, tokenizer)`` -- resolve its layer names against the model (errors name the layer);
* ``loss(captures, batch)`` -- one scalar term from the captured tensors of this forward pass, or
  ``(scalar, {part: scalar})`` to have parts (e.g. per head) logged too;

and ``captured`` (the canonical names it needs). The trainer adds ``weight * loss`` to the task loss.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from ..layers.capture import Captures
from ..layers.names import LayerScheme
from ..registry import Registry

LossOut = torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]


@runtime_checkable
class Regularizer(Protocol):
    captured: list[str]

    def setup(self, model: nn.Module, tokenizer) -> None: ...

    def loss(self, captures: Captures, batch: dict[str, torch.Tensor]) -> LossOut: ...


REGULARIZERS: Registry[type] = Registry("regularizer")


def expand_layers(model: nn.Module, layers: list[str]) -> list[str]:
    """Canonical names for ``layers`` on ``model`` (aliases and globs allowed)."""
    return LayerScheme.from_model(model).expand(layers)
