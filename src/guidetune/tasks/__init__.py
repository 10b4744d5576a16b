"""Tasks. Each module registers itself on import; this is the one place they are imported."""
from .base import TASKS, Task
from . import beliefbank, classification, language_modeling, multiple_choice, seq2seq  # noqa: F401  (registration)

__all__ = ["TASKS", "Task"]
