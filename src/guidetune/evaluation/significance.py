"""Is a difference between two variants real? Intervals and tests over test items and seeds.

* **Paired bootstrap over test items** (Koehn 2004; Dror et al. 2018): both variants were scored on the
  same items, so one resample draws ``n`` item indices with replacement and every run (every seed of
  either variant) is re-scored on that same resample. The 95% interval of the difference of the
  seed-averaged metric is the 2.5/97.5 percentile of the resampled differences. With ``seeds`` the
  seeds of each variant are resampled as well (two-level bootstrap), so the interval also holds the
  seed-to-seed spread.
* **Metrics as functions of item sums.** Every item contributes a small row of components (accuracy:
  ``[correct]``; F1: ``[tp, fp, fn]``; a consistency check: ``[ok]``); a metric is a function of the
  column sums, so a resample only needs the sums. Items whose component rows are identical across all
  runs are interchangeable, so when there are few distinct rows (binary outcomes: at most 2^runs) a
  resample is drawn as multinomial counts over the distinct rows -- the same distribution as drawing
  items, at a cost that does not grow with the number of items.
* **Across seeds**: a two-sample permutation test of the difference of means
  (``scipy.stats.permutation_test``, exact when the seeds allow few rearrangements: 3 vs 3 seeds have
  20, so the smallest two-sided p-value is 0.10). Chosen over deepsig's ASO because scipy is already a
  dependency, is maintained, and pulls nothing else (deepsig would add pandas/arch and its own pins).
  Fewer than 2 seeds on a side: no across-seed test, and the fallback is stated (item bootstrap only).
* **Holm** correction over the comparisons of one table.
* **Ratios over model-dependent checks** (multi-hop consistency): each run's checks are resampled on
  their own (different models have different checks, so nothing is paired).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import GuidetuneError

N_RESAMPLES = 10_000
_CHUNK_CELLS = 1 << 22  # resample x item cells per chunk on the index path (32 MiB of float64)


def _mean(s: np.ndarray, n: int) -> np.ndarray:
    return s[..., 0] / n


def _f1(s: np.ndarray, n: int) -> np.ndarray:
    tp, fp, fn = s[..., 0], s[..., 1], s[..., 2]
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den, dtype=float), where=den > 0)  # sklearn: zero_division=0


METRICS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"mean": _mean, "f1": _f1}


def f1_components(gold: Sequence[bool], pred: Sequence[bool]) -> np.ndarray:
    """[n, 3] rows (tp, fp, fn) of a binary task: F1 of the positive class from their sums."""
    g, p = np.asarray(gold, bool), np.asarray(pred, bool)
    return np.stack([g & p, ~g & p, g & ~p], axis=1).astype(float)


def resample_sums(items: np.ndarray, n_resamples: int = N_RESAMPLES, rng=None) -> np.ndarray:
    """Column sums of ``items`` [n, c] over ``n_resamples`` draws of n rows with replacement: [R, c]."""
    rng = np.random.default_rng(rng)
    items = np.asarray(items, dtype=float)
    n = len(items)
    if n == 0:
        raise GuidetuneError("bootstrap: no items to resample")
    rows, counts = _distinct_rows(items)
    out = np.empty((n_resamples, items.shape[1]))
    if rows is not None and len(rows) * 4 <= n:  # multinomial over distinct rows: exact, cost ~ R x distinct rows
        step = max(1, _CHUNK_CELLS // (8 * len(rows)))
        for s in range(0, n_resamples, step):
            r = min(step, n_resamples - s)
            out[s:s + r] = rng.multinomial(n, counts / n, size=r) @ rows
        return out
    step = max(1, _CHUNK_CELLS // n)
    for s in range(0, n_resamples, step):  # index path: draw counts per item, then one matrix product
        r = min(step, n_resamples - s)
        idx = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        w = np.bincount(idx.ravel(), minlength=r * n).reshape(r, n).astype(np.float32)
        out[s:s + r] = w @ items.astype(np.float32)
    return out


def _distinct_rows(items: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Distinct rows and their counts for integer-valued components (None for real-valued scores, which
    are nearly all distinct). Rows are coded as mixed-radix integers: a 1-D unique, much faster than
    ``np.unique(axis=0)``."""
    if not np.array_equal(items, np.round(items)):
        return None, None
    lo = items.min(0)
    span = items.max(0) - lo + 1
    if np.prod(span) >= 2.0 ** 62:
        rows, counts = np.unique(items, axis=0, return_counts=True)
        return rows, counts
    radix = np.cumprod(np.r_[1, span[:-1]]).astype(np.int64)
    codes = (items - lo).astype(np.int64) @ radix
    _, first, counts = np.unique(codes, return_index=True, return_counts=True)
    return items[first], counts


@dataclass
class Difference:
    """Difference A - B of the seed-averaged metric, with percentile intervals."""

    estimate: float
    low: float  # interval from resampling items (seeds fixed)
    high: float
    p_items: float  # two-sided bootstrap p-value of "no difference" (items resampled)
    low_seeds: float | None = None  # interval when the seeds are resampled too (needs >= 2 seeds per side)
    high_seeds: float | None = None
    a: float = float("nan")  # seed-averaged metric of each side
    b: float = float("nan")


def _percentiles(d: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.percentile(d, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def _p_two_sided(d: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference", counted as (k + 1) / (B + 1) per side: with B
    resamples it is never below 2 / (B + 1) -- a p of exactly 0 would claim more than B draws can show."""
    k = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
    return float(min(1.0, 2 * (k + 1) / (len(d) + 1)))


def _check_runs(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> None:
    if not a or not b:
        raise GuidetuneError("bootstrap: each side needs at least one run")


def _sides(values: np.ndarray, ka: int, kb: int, rng, seeds: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seed-averaged A and B per resample from per-run values [R, ka + kb]; seeds resampled if asked."""
    va, vb = values[:, :ka], values[:, ka:]
    if seeds:
        va = np.take_along_axis(va, rng.integers(0, ka, size=va.shape), 1)
        vb = np.take_along_axis(vb, rng.integers(0, kb, size=vb.shape), 1)
    return va.mean(1), vb.mean(1)


def paired_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], metric: str = "mean",
                      n_resamples: int = N_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> Difference:
    """Paired bootstrap over items of ``mean_seeds(metric(A)) - mean_seeds(metric(B))``.

    ``a`` / ``b``: one [n, c] component array per seed, rows in the same item order for every run.
    """
    _check_runs(a, b)
    n = {len(x) for x in (*a, *b)}
    if len(n) != 1:
        raise GuidetuneError(f"paired bootstrap: runs hold different numbers of items ({sorted(n)}); "
                             "paired statistics need the same test items")
    n, fn, c = n.pop(), METRICS[metric], a[0].shape[1]
    ka, kb = len(a), len(b)
    rng = np.random.default_rng(seed)
    stacked = np.concatenate([np.asarray(x, float) for x in (*a, *b)], axis=1)  # [n, runs * c]
    values = fn(resample_sums(stacked, n_resamples, rng).reshape(n_resamples, ka + kb, c), n)  # [R, runs]
    observed = fn(stacked.sum(0).reshape(ka + kb, c), n)
    return _difference(values, observed, ka, kb, rng, confidence)


def independent_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], metric: str = "mean",
                           n_resamples: int = N_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> Difference:
    """Like :func:`paired_difference`, but every run's items (e.g. its own consistency checks) are
    resampled on their own: for ratios over a model-dependent set of checks."""
    _check_runs(a, b)
    fn = METRICS[metric]
    rng = np.random.default_rng(seed)
    runs = [np.asarray(x, float) for x in (*a, *b)]
    values = np.stack([fn(resample_sums(x, n_resamples, rng), len(x)) for x in runs], axis=1)
    observed = np.array([fn(x.sum(0), len(x)) for x in runs])
    return _difference(values, observed, len(a), len(b), rng, confidence)


def _difference(values, observed, ka, kb, rng, confidence) -> Difference:
    va, vb = _sides(values, ka, kb, rng, seeds=False)
    d = va - vb
    lo, hi = _percentiles(d, confidence)
    out = Difference(float(observed[:ka].mean() - observed[ka:].mean()), lo, hi, _p_two_sided(d),
                     a=float(observed[:ka].mean()), b=float(observed[ka:].mean()))
    if ka >= 2 and kb >= 2:
        sa, sb = _sides(values, ka, kb, rng, seeds=True)
        out.low_seeds, out.high_seeds = _percentiles(sa - sb, confidence)
    return out


def ratio_interval(checks: np.ndarray, n_resamples: int = N_RESAMPLES, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high) of one run's pass/fail checks [m] (e.g. multi-hop consistency), checks resampled."""
    x = np.asarray(checks, float).reshape(-1, 1)
    values = resample_sums(x, n_resamples, np.random.default_rng(seed))[:, 0] / len(x)
    return (float(x.mean()), *_percentiles(values, confidence))


SEED_FALLBACK = "fewer than 2 seeds on a side: no across-seed test; interval and p-value from the item bootstrap only"


def seed_test(a: Sequence[float], b: Sequence[float], n_resamples: int = N_RESAMPLES, seed: int = 0) -> float | None:
    """Two-sided permutation test of mean(a) - mean(b) over the per-seed values (scipy; exact when the
    number of rearrangements is at most ``n_resamples``). None with fewer than 2 seeds on a side."""
    from scipy.stats import permutation_test

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    res = permutation_test((a, b), _mean_diff, permutation_type="independent", vectorized=True,
                           n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return float(res.pvalue)


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None entries are left out and stay None).

    Five lines rather than statsmodels' ``multipletests(method="holm")``: scipy has no Holm, and
    statsmodels would be a large dependency for this alone; the test suite checks hand-computed values."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    p = np.array([pvalues[i] for i in idx], float)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out: list[float | None] = [None] * len(pvalues)
    for j, k in enumerate(order):
        out[idx[k]] = float(adj[j])
    return out
