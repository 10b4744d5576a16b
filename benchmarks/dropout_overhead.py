"""Training step with a `fisher_dropout` schedule vs uniform dropout (MiniLM, same batches).

    python benchmarks/dropout_overhead.py [--steps 30] [--rounds 3]

Both are GuidedTrainer steps without loss terms; the only difference is the dropout probabilities the
schedule wrote into the model (a Fisher file is estimated first on 64 demo sentences). Target <= 1.01.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import demo_texts, header, minilm, time_alternating


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from guidetune.analysis.fisher_estimate import estimate, save
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.finetune.trainer import GuidedTrainer
    from guidetune.regularizers import REGULARIZERS

    header("dropout overhead: fisher_dropout schedule vs uniform dropout (MiniLM)")
    texts = demo_texts()
    fisher_model, tok = minilm()
    samples = [dict(tok(t, truncation=True, max_length=32), labels=i % 2) for i, t in enumerate(texts[:64])]
    with tempfile.TemporaryDirectory() as tmp:
        path = save(Path(tmp) / "f.safetensors", fisher_model,
                    estimate(fisher_model, tok, samples, "task", progress=False)[64], {"model": "minilm", "n": 64})
        models = {}
        for name, params in (("uniform", {"p": 0.1}), ("fisher", {"fisher": str(path), "p_max": 0.1})):
            model, _ = minilm()
            plugin = build_plugin(REGULARIZERS, PluginSpec("dropout" if name == "uniform" else "fisher_dropout", params))
            plugin.setup(model, tok)
            models[name] = model
        feats = [dict(tok(texts[i % len(texts)], padding="max_length", max_length=32, truncation=True), labels=i % 2)
                 for i in range(a.steps * 16)]
        from _common import _collate

        t = time_alternating({name: (lambda m: lambda args, cb: GuidedTrainer(
            model=m, args=args, train_dataset=feats, data_collator=_collate(), callbacks=[cb]))(m)
            for name, m in models.items()}, a.steps, a.rounds)
    print(f"uniform dropout step: {t['uniform'] * 1000:.1f} ms (median)")
    print(f"fisher_dropout step:  {t['fisher'] * 1000:.1f} ms (median)")
    print(f"ratio: {t['fisher'] / t['uniform']:.3f}")


if __name__ == "__main__":
    main()
