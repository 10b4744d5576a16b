"""Regularizers. Each module registers itself on import; this is the one place they are imported."""
from .base import REGULARIZERS, Regularizer, expand_layers
from . import attention_guidance, contrastive, fisher_dropout, hoyer, l1  # noqa: F401  (registration)

__all__ = ["REGULARIZERS", "Regularizer", "expand_layers"]
