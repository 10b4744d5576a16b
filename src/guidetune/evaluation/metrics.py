"""Task metrics as thin wrappers over scikit-learn and scipy."""
from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(gold: Sequence[int], pred: Sequence[int], num_labels: int, positive: int = 1) -> dict:
    """accuracy, macro-F1, and (binary) F1 of the ``positive`` class."""
    out = {
        "accuracy": float(accuracy_score(gold, pred)),
        "f1_macro": float(f1_score(gold, pred, average="macro", labels=list(range(num_labels)), zero_division=0)),
        "n": len(gold),
    }
    if num_labels == 2:
        out["f1"] = float(f1_score(gold, pred, pos_label=positive, average="binary", zero_division=0))
    return out


def mcc(gold: Sequence[int], pred: Sequence[int]) -> float:
    return float(matthews_corrcoef(gold, pred))
