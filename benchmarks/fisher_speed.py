"""Fisher on MiniLM, 256 samples: guidetune (batched per-sample gradients) vs the straightforward loop
(batch of one, torch.autograd.grad, square, accumulate), same samples, one run.

    python benchmarks/fisher_speed.py [--samples 256] [--batch-size 16]

Objective ``task`` (the demo sentiment labels; MiniLM has no LM head). Agreement: the largest relative
error over all parameters, where Fisher values below 1e-6 of the largest are compared as 0 (float32
noise; e.g. attention key biases have exactly zero gradient). ``ratio:`` = speed-up; targets >= 5 and
error <= 1e-4.
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import demo_texts, header, minilm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    from guidetune.analysis.fisher_estimate import estimate, per_sample_nll
    from guidetune.tasks.base import pad_batch

    header(f"Fisher speed: batched per-sample gradients vs batch-of-one loop (MiniLM, {a.samples} samples)")
    model, tok = minilm()
    model.eval()
    texts = demo_texts()
    samples = [dict(tok(texts[i % len(texts)], truncation=True, max_length=32), labels=i % 2) for i in range(a.samples)]
    t0 = time.perf_counter()
    ours = estimate(model, tok, samples, "task", a.batch_size, progress=False)[a.samples]
    t_ours = time.perf_counter() - t0

    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    t0 = time.perf_counter()
    for s in samples:
        nll = per_sample_nll(model, pad_batch(tok, [s]), "task")
        for (n, _), g in zip(params.items(), torch.autograd.grad(nll.sum(), list(params.values()), allow_unused=True)):
            if g is not None:
                total[n] += g.double() ** 2
    t_loop = time.perf_counter() - t0
    ref = {n: t / a.samples for n, t in total.items()}
    floor = 1e-6 * max(float(v.max()) for v in ref.values())
    err, where = 0.0, ""
    for n in ref:
        e = float(((ours[n].double() - ref[n]).abs() / ref[n].abs().clamp_min(floor)).max())
        if e > err:
            err, where = e, n
    print(f"guidetune: {t_ours:.1f} s ({a.samples / t_ours:.1f} samples/s, batch {a.batch_size})")
    print(f"loop:      {t_loop:.1f} s ({a.samples / t_loop:.1f} samples/s)")
    print(f"max relative error: {err:.2e} ({where})  target <= 1e-4: {'met' if err <= 1e-4 else 'MISSED'}")
    print(f"ratio: {t_loop / t_ours:.2f}")


if __name__ == "__main__":
    main()
