"""What the head ablations of ablation.sh do to the answers: per run, method and phrasing, the share of
"yes" answers before and after ablating heads 0-2 of every layer, and the share of answers flipped.
(`guidetune analyze ablate` reports metrics only; this tells a collapse to "yes" from random damage.)

    python experiments/attention_guidance/ablation_answers.py heads0-2-negation-s0 ... > answers.md

Same units, methods, mean reference (the training questions written by ablation.sh) and test questions
(ablation_task.yaml) as ablation.sh.
"""
from __future__ import annotations

import sys

import numpy as np

from guidetune.analysis.ablate import Ablator
from guidetune.analysis.ablate_cmd import load_for_ablation
from guidetune.analysis.ablate_units import parse_units
from guidetune.analysis.common import read_corpus

RUNS = "runs/attention-guidance-ablation"
A = "runs/attention-guidance-ablation-analysis"
TASK = "experiments/attention_guidance/ablation_task.yaml"
HEADS = ";".join(f"encoder.layers.{i}.attn:0,1,2" for i in range(6))


def main() -> None:
    ref = [t for _, t, _ in read_corpus(f"{A}/train_questions.txt")]
    print("| run | method | phrasing | gold yes | said yes (before) | said yes (ablated) | answers flipped by the ablation |")
    print("|---|---|---|---|---|---|---|")
    for run in sys.argv[1:]:
        model, tok, task = load_for_ablation(f"{RUNS}/{run}", TASK, "cpu")
        qs = task.questions("eval")
        gold = np.array([q.answer for q in qs])
        before = np.array(task.answer(model, qs, 32))
        for method in ("zero", "mean"):
            ab = Ablator(model, tok, parse_units(model, HEADS), method, ref if method == "mean" else None)
            with ab.hooks():
                after = np.array(task.answer(model, qs, 32))
            for tag, neg in (("negated", True), ("plain", False)):
                k = np.array([q.negated == neg for q in qs])
                print(f"| {run} | {method} | {tag} | {gold[k].mean():.3f} | {before[k].mean():.3f} | "
                      f"{after[k].mean():.3f} | {(before[k] != after[k]).mean():.3f} |", flush=True)


if __name__ == "__main__":
    main()
