"""`analyze neurons` streaming statistics vs a plain batched forward pass over the same corpus (MiniLM).

    python benchmarks/neuron_throughput.py [--copies 10]

The corpus is the built-in topic corpus repeated ``copies`` times; both sides tokenize and run the same
batches (64); the tool also captures encoder.layers.3.ffn.act and updates every counter.
``ratio:`` = tool throughput / plain throughput (target >= 0.9).
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import header, minilm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    a = ap.parse_args()
    from guidetune.analysis.common import batched, read_corpus
    from guidetune.analysis.neuron_analysis import BUILTIN_CONCEPTS, BUILTIN_CORPUS, read_concepts
    from guidetune.analysis.neurons import Keywords, collect

    header("neuron statistics throughput vs plain forward (MiniLM, encoder.layers.3.ffn.act)")
    model, tok = minilm(head="encoder")
    model.eval()
    texts = [t for _, t, _ in read_corpus(BUILTIN_CORPUS)] * a.copies
    kw = Keywords(read_concepts(BUILTIN_CONCEPTS))

    @torch.no_grad()
    def plain():
        for chunk in batched(texts, 64):
            model(**tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=128))

    def tool():
        collect(model, tok, batched(texts, 64), "encoder.layers.3.ffn.act", kw)

    plain(), tool()
    t = {"plain": 1e9, "tool": 1e9}
    for _ in range(3):
        for name, fn in (("plain", plain), ("tool", tool)):
            t0 = time.perf_counter()
            fn()
            t[name] = min(t[name], time.perf_counter() - t0)
    print(f"{len(texts)} sentences, best of 3")
    print(f"plain forward:     {t['plain']:.2f} s = {len(texts) / t['plain']:.0f} sentences/s")
    print(f"analyze neurons:   {t['tool']:.2f} s = {len(texts) / t['tool']:.0f} sentences/s")
    print(f"ratio: {t['plain'] / t['tool']:.3f}")


if __name__ == "__main__":
    main()
