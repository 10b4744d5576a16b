import itertools

import numpy as np
import pytest

from guidetune.errors import GuidetuneError
from guidetune.evaluation.consistency import multihop_checks, multihop_consistency
from guidetune.evaluation.significance import (f1_components, holm, independent_difference, paired_difference,
                                               ratio_interval, resample_sums, seed_test)


def test_identical_runs_give_a_zero_width_interval_at_zero():
    rng = np.random.default_rng(1)
    runs = [rng.random((500, 1)) < 0.7 for _ in range(3)]
    d = paired_difference(runs, runs, "mean", n_resamples=2000)
    assert d.estimate == 0 and d.low == 0 and d.high == 0 and d.p_items == 1.0
    assert d.low_seeds <= 0 <= d.high_seeds  # seeds resampled: different seed draws, interval still holds 0


def test_interval_width_matches_the_normal_approximation_for_bernoulli_items():
    # Independent Bernoulli(p) outcomes for A and B on n items: var(a_i - b_i) = 2 p (1 - p),
    # so the 95% interval of the mean difference is about 2 * 1.96 * sqrt(2 p (1 - p) / n) wide.
    n, p = 4000, 0.3
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, 1)) < p).astype(float), (rng.random((n, 1)) < p).astype(float)
    d = paired_difference([a], [b], "mean", n_resamples=10_000, seed=3)
    diff = a[:, 0] - b[:, 0]
    expected = 2 * 1.96 * np.sqrt(diff.var() / n)
    assert d.high - d.low == pytest.approx(expected, rel=0.05)
    assert d.estimate == pytest.approx(diff.mean())
    assert d.low < d.estimate < d.high
    assert d.low_seeds is None  # one seed a side: no seed-level interval


def test_pairing_narrows_the_interval_for_correlated_runs():
    rng = np.random.default_rng(0)
    base = rng.random((2000, 1)) < 0.6
    flip = rng.random((2000, 1)) < 0.05
    a, b = base.astype(float), (base ^ flip).astype(float)
    paired = paired_difference([a], [b], n_resamples=4000)
    unpaired = independent_difference([a], [b], n_resamples=4000)
    assert (paired.high - paired.low) < 0.5 * (unpaired.high - unpaired.low)


def test_resampled_sums_have_the_multinomial_moments_on_both_paths():
    # Few distinct rows take the multinomial path, many the index path: same mean n*mu, var n*sigma^2.
    rng = np.random.default_rng(0)
    for items in (rng.integers(0, 2, (3000, 2)).astype(float), rng.normal(size=(300, 2))):
        s = resample_sums(items, 20_000, rng=5)
        n = len(items)
        assert s.mean(0) == pytest.approx(items.sum(0), abs=4 * np.sqrt(n * items.var(0) / 20_000).max())
        assert s.var(0) == pytest.approx(n * items.var(0), rel=0.05)


def test_f1_metric_from_component_sums_equals_sklearn():
    from sklearn.metrics import f1_score

    gold = [1, 1, 0, 0, 1, 0, 1]
    pred = [1, 0, 0, 1, 1, 0, 0]
    c = f1_components(gold, pred)
    d = paired_difference([c], [f1_components(gold, gold)], "f1", n_resamples=10)
    assert d.a == pytest.approx(f1_score(gold, pred)) and d.b == 1.0


def test_runs_on_different_numbers_of_items_are_refused():
    with pytest.raises(GuidetuneError, match="different numbers of items"):
        paired_difference([np.ones((5, 1))], [np.ones((6, 1))])


def test_holm_against_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.4]) == [pytest.approx(0.8), None, pytest.approx(0.8)]
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_permutation_test_equals_brute_force_enumeration():
    a, b = [0.91, 0.95, 0.97], [0.80, 0.88, 0.86, 0.90]
    pooled = np.array(a + b)
    obs = np.mean(a) - np.mean(b)
    stats = []
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        rest = [i for i in range(len(pooled)) if i not in chosen]
        stats.append(pooled[list(chosen)].mean() - pooled[rest].mean())
    stats = np.array(stats)
    eps = 1e-12
    expected = min(1.0, 2 * min(np.mean(stats >= obs - eps), np.mean(stats <= obs + eps)))
    assert seed_test(a, b) == pytest.approx(expected)
    assert seed_test(a, b) == pytest.approx(2 / 35)  # only the observed split is as extreme: 2 x 1/35
    assert seed_test([0.9, 0.8, 0.7], [0.1, 0.2, 0.3]) == pytest.approx(0.1)  # 3 vs 3: smallest p is 2/20
    assert seed_test([0.9], [0.1, 0.2]) is None


def test_multihop_checks_match_the_consistency_ratio_and_give_an_interval():
    edges = {("a", "b"): True, ("b", "c"): True, ("c", "d"): False, ("b", "e"): True}
    pairs = {("a", "c"): True, ("a", "d"): True, ("b", "d"): False, ("a", "e"): False}
    checks = multihop_checks(edges, pairs)
    ref = multihop_consistency(edges, pairs)
    assert len(checks) == ref["checks"] and int((~checks).sum()) == ref["violations"]
    assert checks.mean() == pytest.approx(ref["consistency"])
    ratio, lo, hi = ratio_interval(np.r_[np.ones(90), np.zeros(10)], n_resamples=4000)
    assert ratio == 0.9 and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.09 / 100), rel=0.15)


def test_bootstrap_p_value_is_never_zero():
    """All resamples on one side: p is the smallest the resamples can show, 2 / (B + 1), not 0."""
    from guidetune.evaluation.significance import paired_difference

    a = [np.ones((50, 1))]
    b = [np.zeros((50, 1))]
    d = paired_difference(a, b, "mean", n_resamples=999)
    assert d.estimate == 1.0 and d.p_items == pytest.approx(2 / 1000)
