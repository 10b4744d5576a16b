"""Forward pass of MiniLM inside an empty ``Capture`` (nothing requested) vs the bare forward.

    python benchmarks/capture_overhead.py [--reps 20] [--rounds 10]

Also prints, for information, the cost of capturing two layers and of recomputing 4 heads' attention.
Target for the empty capture: ratio <= 1.01.
"""
from __future__ import annotations

import argparse

import torch

from _common import demo_texts, header, interleaved, minilm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    from guidetune.layers.capture import Capture

    header("capture overhead: empty Capture vs bare forward (MiniLM, batch 16 x 32 tokens, no grad)")
    model, tok = minilm(head="encoder")
    model.eval()
    batch = dict(tok(demo_texts()[:16], padding="max_length", max_length=32, truncation=True, return_tensors="pt"))

    def bare():
        with torch.no_grad():
            model(**batch)

    def empty():
        with torch.no_grad(), Capture(model, []):
            model(**batch)

    def two_layers():
        with torch.no_grad(), Capture(model, ["encoder.middle", "encoder.final"]):
            model(**batch)

    def four_heads():
        with torch.no_grad(), Capture(model, ["encoder.layers.3.attn.probs"]) as cap:
            model(**batch)
            cap.attention("encoder.layers.3.attn.probs", [0, 1, 2, 3])

    for _ in range(5):
        bare()
    t = interleaved({"bare": bare, "empty": empty, "two": two_layers, "heads": four_heads}, a.rounds, a.reps)
    print(f"bare forward:                   {t['bare'] * 1000:.2f} ms")
    print(f"empty Capture:                  {t['empty'] * 1000:.2f} ms")
    print(f"Capture of 2 block outputs:     {t['two'] * 1000:.2f} ms ({t['two'] / t['bare']:.3f}x)")
    print(f"Capture + 4 heads' attention:   {t['heads'] * 1000:.2f} ms ({t['heads'] / t['bare']:.3f}x)")
    print(f"ratio: {t['empty'] / t['bare']:.3f}")


if __name__ == "__main__":
    main()
