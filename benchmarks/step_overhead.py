"""GuidedTrainer step with `l1` on two MiniLM layers vs a plain HF Trainer step, same batches, one process.

    python benchmarks/step_overhead.py [--steps 30] [--rounds 3]

Both trainers run the same number of optimizer steps on identical batches (batch 16, length 32),
alternating in rounds (see ``_common.time_trainer_steps``). Target: ratio <= 1.05.
"""
from __future__ import annotations

import argparse

from _common import demo_texts, header, minilm, time_trainer_steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", nargs="+", default=["encoder.middle", "encoder.final"])
    a = ap.parse_args()
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.finetune.trainer import Term
    from guidetune.regularizers import REGULARIZERS

    header("step overhead: GuidedTrainer + l1 on two layers vs plain Trainer (MiniLM)")
    model, tok = minilm()
    texts = demo_texts()
    feats = [dict(tok(texts[i % len(texts)], padding="max_length", max_length=32, truncation=True), labels=i % 2)
             for i in range(a.steps * 16)]
    reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": a.layers}))
    reg.setup(model, tok)
    t = time_trainer_steps(model, feats, [Term("l1", 1e-3, reg)], a.steps, a.rounds)
    print(f"layers: {', '.join(reg.captured)}; steps per trainer: {a.steps} x {a.rounds} rounds")
    print(f"plain Trainer step:   {t['plain'] * 1000:.1f} ms (median)")
    print(f"GuidedTrainer + l1:   {t['guided'] * 1000:.1f} ms (median)")
    print(f"ratio: {t['guided'] / t['plain']:.3f}")


if __name__ == "__main__":
    main()
