"""Analyses. Each module registers itself on import; this is the one place they are imported."""
from ..registry import Registry

ANALYSES: Registry[type] = Registry("analysis")

from . import attention, landscape, neuron_analysis  # noqa: E402,F401  (registration)

__all__ = ["ANALYSES"]
