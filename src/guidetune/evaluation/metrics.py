"""Task metrics as thin wrappers over scikit-learn and scipy."""
from __future__ import annotations

from collections.abc import Sequence

# scikit-learn is imported where a metric is computed: importing it costs about a second, which every
# command that only reads a config (validate, ls) would otherwise pay.


def classification_metrics(gold: Sequence[int], pred: Sequence[int], num_labels: int, positive: int = 1) -> dict:
    """accuracy, macro-F1, and (binary) F1 of the ``positive`` class."""
    from sklearn.metrics import accuracy_score, f1_score

    out = {
        "accuracy": float(accuracy_score(gold, pred)),
        "f1_macro": float(f1_score(gold, pred, average="macro", labels=list(range(num_labels)), zero_division=0)),
        "n": len(gold),
    }
    if num_labels == 2:
        out["f1"] = float(f1_score(gold, pred, pos_label=positive, average="binary", zero_division=0))
    return out


def regression_metrics(gold: Sequence[float], pred: Sequence[float]) -> dict:
    """Pearson and Spearman correlations (scipy) and mean squared error."""
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": float(pearsonr(gold, pred).statistic), "spearman": float(spearmanr(gold, pred).statistic),
            "mse": float(sum((g - p) ** 2 for g, p in zip(gold, pred)) / max(len(gold), 1)), "n": len(gold)}


def mcc(gold: Sequence[int], pred: Sequence[int]) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(gold, pred))


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (0-1) with Porter stemming, via Google's rouge-score package."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(predictions, references):
        for k, s in scorer.score(r, p).items():
            totals[k] += s.fmeasure
    n = max(len(predictions), 1)
    return {k: v / n for k, v in totals.items()}
