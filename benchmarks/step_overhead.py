"""GuidedTrainer step with `l1` on two MiniLM layers vs a plain HF Trainer step, same batches, one process.

    python benchmarks/step_overhead.py [--steps 30] [--rounds 3]

Both trainers run the same number of optimizer steps on identical batches (batch 16, length 32). The
time of each step is taken between the Trainer's on_step_begin and on_step_end callbacks; the two
trainers alternate in rounds so machine noise hits both alike. Target: ratio <= 1.05.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _common import demo_texts, header, minilm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", nargs="+", default=["encoder.middle", "encoder.final"])
    a = ap.parse_args()

    from transformers import Trainer, TrainerCallback, TrainingArguments

    from guidetune.config import PluginSpec, build_plugin
    from guidetune.finetune.trainer import GuidedTrainer, Term
    from guidetune.regularizers import REGULARIZERS

    header("step overhead: GuidedTrainer + l1 on two layers vs plain Trainer (MiniLM)")
    model, tok = minilm()
    texts = demo_texts()
    n = a.steps * 16
    feats = [dict(tok(texts[i % len(texts)], padding="max_length", max_length=32, truncation=True), labels=i % 2)
             for i in range(n)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, *args, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, *args, **kw):
            self.times.append(time.perf_counter() - self.t0)

    reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": a.layers}))
    reg.setup(model, tok)
    times = {"plain": [], "guided": []}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=a.steps, per_device_train_batch_size=16,
                                 learning_rate=1e-5, report_to="none", save_strategy="no", logging_steps=10**6,
                                 disable_tqdm=True, use_cpu=True, seed=0, dataloader_pin_memory=False)
        for _ in range(a.rounds):
            for kind in ("plain", "guided"):
                timer = Timer()
                if kind == "plain":
                    tr = Trainer(model=model, args=args, train_dataset=feats, callbacks=[timer])
                else:
                    tr = GuidedTrainer(model=model, args=args, train_dataset=feats, callbacks=[timer],
                                       terms=[Term("l1", 1e-3, reg)])
                tr.train()
                times[kind] += timer.times[3:]  # first steps warm up allocators
    plain, guided = statistics.median(times["plain"]), statistics.median(times["guided"])
    print(f"layers: {', '.join(reg.captured)}; steps per trainer: {a.steps} x {a.rounds} rounds")
    print(f"plain Trainer step:   {plain * 1000:.1f} ms (median)")
    print(f"GuidedTrainer + l1:   {guided * 1000:.1f} ms (median)")
    print(f"ratio: {guided / plain:.3f}")


if __name__ == "__main__":
    main()
