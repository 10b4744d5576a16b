"""Paired bootstrap, 10,000 resamples over 10,000 items x 2 variants x 5 seeds: target <= 1 s.

    python benchmarks/bootstrap_speed.py

Per-item correctness of 10 runs (2 variants x 5 seeds) is simulated with item difficulty shared by
the runs (realistic: runs agree on most items), F1 components (tp, fp, fn) per item and run. Timed:
``paired_difference`` (both intervals, items and items + seeds) for accuracy and for F1. Also timed,
for reference, the worst case of continuous per-item scores (every item distinct; index path).
Baseline: a plain loop over resamples (index draw + metric per resample), timed on 500 resamples and
scaled to 10,000. ``ratio:`` = tool seconds for F1 / 1 s target (<= 1 passes).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header  # noqa: E402


def main() -> None:
    from guidetune.evaluation.significance import f1_components, paired_difference

    header("paired bootstrap: 10,000 resamples, 10,000 items x 2 variants x 5 seeds")
    rng = np.random.default_rng(0)
    n, seeds = 10_000, 5
    gold = rng.random(n) < 0.3
    hard = rng.random(n)
    runs = {v: [(hard > 0.12 + 0.03 * v + 0.02 * rng.random()) ^ (rng.random(n) < 0.02) for _ in range(seeds)] for v in (0, 1)}
    acc = {v: [c[:, None].astype(float) for c in runs[v]] for v in runs}
    f1 = {v: [f1_components(gold, np.where(c, gold, ~gold)) for c in runs[v]] for v in runs}
    out = {}
    for name, data, metric in (("accuracy", acc, "mean"), ("f1", f1, "f1")):
        t0 = time.perf_counter()
        d = paired_difference(data[0], data[1], metric, n_resamples=10_000)
        out[name] = time.perf_counter() - t0
        print(f"{name}: {out[name]:.3f} s; A - B = {d.estimate:+.4f}, items [{d.low:+.4f}, {d.high:+.4f}], "
              f"items + seeds [{d.low_seeds:+.4f}, {d.high_seeds:+.4f}]")
    cont = {v: [rng.normal(size=(n, 1)) for _ in range(seeds)] for v in (0, 1)}
    t0 = time.perf_counter()
    paired_difference(cont[0], cont[1], "mean", n_resamples=10_000)
    print(f"continuous scores (every item distinct, worst case): {time.perf_counter() - t0:.3f} s")
    stacked = np.concatenate(f1[0] + f1[1], axis=1)
    t0 = time.perf_counter()
    for _ in range(500):  # baseline: one index draw and a metric per resample
        s = stacked[rng.integers(0, n, n)].sum(0).reshape(10, 3)
        _ = 2 * s[:, 0] / (2 * s[:, 0] + s[:, 1] + s[:, 2])
    loop = (time.perf_counter() - t0) * 20
    print(f"plain loop over resamples (500 timed, x20): {loop:.2f} s for 10,000")
    print(f"ratio: {out['f1']:.3f}")


if __name__ == "__main__":
    main()
