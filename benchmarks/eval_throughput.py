"""BeliefBank question answering: guidetune's eval path vs a plain batched forward loop, same questions.

    python benchmarks/eval_throughput.py [--beliefbank ../shared/data/beliefbank] [--batch-size 64]

The questions are what one evaluation asks: the test facts, the constraint graph's edge questions and
every entity's facts for constraint consistency (test facts appear twice). The baseline tokenizes
each batch in file order, pads it, and runs the classifier. The tool (``BeliefBankTask.answer``) asks
each distinct question once, in length-sorted batches. Both give the same answers (checked).
``ratio:`` = tool throughput / baseline throughput (questions per second); target >= 0.9.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, minilm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beliefbank", default=str(Path(__file__).resolve().parents[2] / "shared/data/beliefbank"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=6000, help="questions timed (0: all)")
    a = ap.parse_args()
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.tasks import TASKS

    header("eval throughput: BeliefBankTask.answer vs plain batched forward (MiniLM classifier)")
    model, tok = minilm()
    model.eval()
    task = build_plugin(TASKS, PluginSpec("beliefbank", {"data": a.beliefbank, "max_length": 32}))
    task.setup(tok)
    bank = task.bank
    qs = task.questions("test") + bank.edge_questions() + bank.fact_questions()
    if a.limit:
        qs = qs[: a.limit]

    def plain():
        out = []
        with torch.no_grad():
            for i in range(0, len(qs), a.batch_size):
                enc = tok([q.text for q in qs[i:i + a.batch_size]], padding=True, truncation=True,
                          max_length=32, return_tensors="pt")
                logits = model(**enc).logits
                out += (logits[:, 1] > logits[:, 0]).tolist()
        return out

    def tool():
        return task.answer(model, qs, a.batch_size)

    plain(), tool()  # warm-up
    times = {"plain": [], "tool": []}
    for _ in range(3):
        for name, fn in (("plain", plain), ("tool", tool)):
            t0 = time.perf_counter()
            answers = fn()
            times[name].append(time.perf_counter() - t0)
            if name == "plain":
                ref = answers
            else:
                assert answers == ref, "tool and baseline answers differ"
    p, t = min(times["plain"]), min(times["tool"])
    distinct = len({q.text for q in qs})
    print(f"questions: {len(qs)} ({distinct} distinct), batch size {a.batch_size}, best of 3")
    print(f"plain loop: {p:.2f} s = {len(qs) / p:.0f} questions/s")
    print(f"guidetune:  {t:.2f} s = {len(qs) / t:.0f} questions/s")
    print(f"ratio: {p / t:.3f}")


if __name__ == "__main__":
    main()
