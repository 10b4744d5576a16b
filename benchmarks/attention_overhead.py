"""MiniLM training step with attention guidance vs a plain step (default SDPA attention everywhere).

    python benchmarks/attention_overhead.py [--steps 30] [--rounds 3]

Guided: 4 heads of one layer (the target, <= 1.15), then all 12 heads of all 6 layers (reported).
Batches of 16 demo sentences, length 32, negation token set.
"""
from __future__ import annotations

import argparse

from _common import demo_texts, header, minilm, time_trainer_steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.finetune.trainer import Term
    from guidetune.regularizers import REGULARIZERS

    header("attention guidance overhead vs plain step (MiniLM, SDPA)")
    model, tok = minilm()
    texts = [t.replace(" was ", " was not ") for t in demo_texts()]
    feats = [dict(tok(texts[i % len(texts)], padding="max_length", max_length=32, truncation=True), labels=i % 2)
             for i in range(a.steps * 16)]
    results = {}
    for label, params in (("4 heads, 1 layer", {"layers": ["encoder.layers.3"], "heads": [0, 1, 2, 3]}),
                          ("12 heads, 6 layers", {"layers": ["encoder.layers.*"], "heads": list(range(12))})):
        reg = build_plugin(REGULARIZERS, PluginSpec("attention_guidance", params))
        reg.setup(model, tok)
        t = time_trainer_steps(model, feats, [Term("attention_guidance", 0.01, reg)], a.steps, a.rounds)
        results[label] = t
        print(f"{label}: plain {t['plain'] * 1000:.1f} ms, guided {t['guided'] * 1000:.1f} ms, "
              f"ratio {t['guided'] / t['plain']:.3f}")
    t = results["4 heads, 1 layer"]
    print(f"ratio: {t['guided'] / t['plain']:.3f}")


if __name__ == "__main__":
    main()
