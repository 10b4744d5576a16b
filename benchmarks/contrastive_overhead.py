"""GuidedTrainer step with `l1` + `contrastive` on encoder.final vs a plain Trainer step (MiniLM).

    python benchmarks/contrastive_overhead.py [--steps 30] [--rounds 3] [--similarity pairwise_average]

Batches of 16 BeliefBank questions (8 adjacent pairs from the built-in mini belief bank, kept whole
by the pair sampler in both trainers). Target: ratio <= 1.10.
"""
from __future__ import annotations

import argparse

from _common import header, minilm, time_trainer_steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--similarity", default="pairwise_average")
    a = ap.parse_args()
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.finetune.trainer import Term
    from guidetune.regularizers import REGULARIZERS
    from guidetune.tasks import TASKS

    header(f"contrastive overhead: l1 + contrastive ({a.similarity}) on encoder.final vs plain (MiniLM)")
    model, tok = minilm()
    task = build_plugin(TASKS, PluginSpec("beliefbank", {"pairs": "adjacent", "max_length": 32}))
    task.setup(tok)
    feats = task.dataset("train")
    terms = []
    for name, params in [("l1", {"layers": ["encoder.final"]}),
                         ("contrastive", {"layers": ["encoder.final"], "similarity": a.similarity})]:
        reg = build_plugin(REGULARIZERS, PluginSpec(name, params))
        reg.setup(model, tok)
        terms.append(Term(name, 0.05, reg))
    t = time_trainer_steps(model, feats, terms, a.steps, a.rounds, sampler=task.train_sampler(0))
    print(f"pairs: {task.pair_report}; steps per trainer: {a.steps} x {a.rounds} rounds, batch 16")
    print(f"plain Trainer step:              {t['plain'] * 1000:.1f} ms (median)")
    print(f"GuidedTrainer + l1 + contrastive: {t['guided'] * 1000:.1f} ms (median)")
    print(f"ratio: {t['guided'] / t['plain']:.3f}")


if __name__ == "__main__":
    main()
