"""``l1``: activation sparsity, SpARC eq. 1."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..spec import check, finish
from .base import REGULARIZERS, expand_layers
from .tokens import TokenSelection, select


def token_terms(captures, batch, names, tokens, per_vector) -> tuple[torch.Tensor, int]:
    """Sum over layers and selected tokens of ``per_vector(vectors [n, d]) -> [n]``; and n per layer."""
    total, count = None, 0
    for name in names:
        x = captures[name]  # [batch, seq, dim]
        vecs, _ = select(x, captures.token_mask(name), tokens, batch, captures.seq2seq_decoder(name))
        values = per_vector(vecs.float()).sum()
        total = values if total is None else total + values
        count = vecs.shape[0]
    return total, count


@REGULARIZERS.register("l1")
@dataclass
class L1:
    """Mean L1 norm of the (L2-normalised) activations of the selected tokens (SpARC eq. 1).

    term = (1/n) * sum_layers sum_examples sum_selected_tokens || a / ||a||_2 ||_1

    ``a`` is one token's activation vector at a layer. Normalising by its L2 norm makes the term
    scale-free: the model cannot lower it by shrinking activations that a following LayerNorm rescales
    anyway, only by concentrating them on fewer units (it ranges from 1, one-hot, to sqrt(dim), flat).
    ``normalize: none`` uses the raw activations instead. Padding tokens are never selected (the
    attention mask decides). ``reduction: sum`` is eq. 1 exactly (n = 1); ``mean`` (default) divides by
    the number of selected tokens n so the weight means the same at any batch size or sequence length.
    """

    layers: list[str] = field(default_factory=lambda: ["final"], metadata={"help": "canonical layer names"})
    tokens: TokenSelection = field(default="all", metadata={"help": "all | last | eos | answer | entity"})
    normalize: Literal["l2", "none"] = field(default="l2", metadata={"help": "per-token normalisation"})
    reduction: Literal["mean", "sum"] = field(default="mean", metadata={"help": "mean over tokens, or sum"})
    eps: float = 1e-6

    def __post_init__(self):
        e: list[str] = []
        check(e, len(self.layers) > 0, "layers: give at least one layer name")
        check(e, self.eps > 0, f"eps: must be > 0, got {self.eps}")
        finish(e)
        self.captured: list[str] = []

    def setup(self, model, tokenizer) -> None:
        self.captured = expand_layers(model, self.layers)

    def _per_vector(self, v: torch.Tensor) -> torch.Tensor:
        if self.normalize == "l2":
            v = v / v.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return v.abs().sum(-1)

    def loss(self, captures, batch) -> torch.Tensor:
        total, n = token_terms(captures, batch, self.captured, self.tokens, self._per_vector)
        return total / max(n, 1) if self.reduction == "mean" else total
