"""``hoyer``: the Hoyer-square sparsity measure, L1^2 / L2^2 (Hoyer 2004; Kurtz et al. 2020)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..spec import check, finish
from .base import REGULARIZERS, expand_layers
from .l1 import token_terms
from .tokens import TokenSelection


@REGULARIZERS.register("hoyer")
@dataclass
class Hoyer:
    """Mean over selected tokens of ||a||_1^2 / ||a||_2^2, summed over layers.

    Per token it lies in [1, dim] (1 for a one-hot vector) and is scale-invariant, so no normalisation
    is needed. Padding tokens are excluded; ``reduction`` as for ``l1``.
    """

    layers: list[str] = field(default_factory=lambda: ["final"], metadata={"help": "canonical layer names"})
    tokens: TokenSelection = field(default="all", metadata={"help": "all | last | eos | answer | entity"})
    reduction: Literal["mean", "sum"] = "mean"
    eps: float = 1e-8

    def __post_init__(self):
        e: list[str] = []
        check(e, len(self.layers) > 0, "layers: give at least one layer name")
        finish(e)
        self.captured: list[str] = []

    def setup(self, model, tokenizer) -> None:
        self.captured = expand_layers(model, self.layers)

    def _per_vector(self, v: torch.Tensor) -> torch.Tensor:
        return v.abs().sum(-1).pow(2) / v.pow(2).sum(-1).clamp_min(self.eps)

    def loss(self, captures, batch) -> torch.Tensor:
        total, n = token_terms(captures, batch, self.captured, self.tokens, self._per_vector)
        return total / max(n, 1) if self.reduction == "mean" else total
