"""Multiple-choice scoring: guidetune's scorer (prompt encoded once, cache reused) vs naive scoring
(one forward per class over prompt + class), tiny GPT-2, 4 classes per item.

    python benchmarks/mc_throughput.py [--items 64]

``ratio:`` = speed-up (naive time / guidetune time); the scores agree (checked to 1e-4).
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import header


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=64)
    a = ap.parse_args()
    from guidetune.evaluation.scoring import option_logprobs
    from guidetune.testing import tiny_model, tokenizer

    header("multiple-choice scoring throughput: prompt-cached scorer vs one forward per class (tiny GPT-2)")
    tok = tokenizer()
    model = tiny_model("gpt2", n_embd=128, n_layer=4, n_head=4).eval()
    prompts = [f"Question {i}: " + " ".join(["the quick brown fox jumps over the lazy dog"] * 6) + " Answer:"
               for i in range(a.items)]
    options = [[" yes", " no", " maybe so", " not at all"]] * a.items

    def naive():
        out = []
        with torch.no_grad():
            for p, opts in zip(prompts, options):
                row = []
                pi = tok(p)["input_ids"]
                for o in opts:
                    ci = tok(o, add_special_tokens=False)["input_ids"]
                    lp = torch.log_softmax(model(input_ids=torch.tensor([pi + ci])).logits[0].float(), -1)
                    row.append(sum(float(lp[len(pi) - 1 + j, ci[j]]) for j in range(len(ci))))
                out.append(row)
        return out

    def tool():
        return [[s for s, _ in item] for item in option_logprobs(model, tok, prompts, options, "causal_lm")]

    naive(), tool()
    t = {}
    for name, fn in (("naive", naive), ("tool", tool), ("naive", naive), ("tool", tool)):
        t0 = time.perf_counter()
        res = fn()
        t[name] = min(t.get(name, 1e9), time.perf_counter() - t0)
        if name == "naive":
            ref = res
        else:
            assert max(abs(x - y) for r1, r2 in zip(res, ref) for x, y in zip(r1, r2)) < 1e-4
    print(f"{a.items} items x 4 classes; prompts of {len(tok(prompts[0])['input_ids'])} tokens")
    print(f"naive (one forward per class): {t['naive']:.3f} s")
    print(f"guidetune (prompt once, batched): {t['tool']:.3f} s")
    print(f"ratio: {t['naive'] / t['tool']:.2f}")


if __name__ == "__main__":
    main()
