"""Ablated evaluation vs plain evaluation of the same task and model (hooks only on ablated modules).

    python benchmarks/ablation_throughput.py [--rounds 3]

Task: the demo sentiment classification task evaluated on its 320 training sentences, packaged MiniLM
classifier, batch 64. Ablation: the ``mean`` of 10 neurons of ``encoder.layers.3.ffn.act`` plus heads
0-1 of ``encoder.layers.2.attn`` zeroed (two hooked modules, reference means from the built-in corpus,
computed once before timing). Both evaluations run interleaved; medians.

A random control of R draws costs R more evaluations (R = 20: 20 x the time of one evaluation); draws
are not batched together, so its throughput per evaluation is the ablated one printed here.
``ratio:`` = ablated throughput / plain throughput (items per second); target >= 0.9.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, interleaved, minilm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    from guidetune.analysis.ablate import Ablator
    from guidetune.analysis.ablate_units import parse_units
    from guidetune.analysis.common import read_corpus
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.tasks import TASKS

    header("ablation throughput: task evaluation with 10 neurons (mean) + 2 heads (zero) ablated vs plain")
    model, tok = minilm()
    model.eval()
    task = build_plugin(TASKS, PluginSpec("classification", {"eval": "guidetune:demo/sentiment_train.jsonl"}))
    task.setup(tok)
    n = len(task.dataset("eval"))
    ref = [t for _, t, _ in read_corpus("guidetune:corpus/topics.txt")]
    neurons = Ablator(model, tok, parse_units(model, "encoder.layers.3.ffn.act:478,917,1207,1506,463,485,1488,616,788,14"),
                      "mean", ref)
    heads = Ablator(model, tok, parse_units(model, "encoder.layers.2.attn:0,1"), "zero")

    def plain():
        return task.evaluate(model, "eval", a.batch_size)

    def ablated():
        with neurons.hooks(), heads.hooks():
            return task.evaluate(model, "eval", a.batch_size)

    plain(), ablated()  # warm-up
    t = interleaved({"plain": plain, "ablated": ablated}, a.rounds, 1)
    print(f"items: {n}; plain {n / t['plain']:.1f} items/s ({t['plain'] * 1000:.0f} ms), "
          f"ablated {n / t['ablated']:.1f} items/s ({t['ablated'] * 1000:.0f} ms)")
    print(f"a 20-draw random control = 20 more evaluations: about {20 * t['ablated']:.1f} s here (not batched)")
    print(f"ratio: {t['plain'] / t['ablated']:.3f}")


if __name__ == "__main__":
    main()
