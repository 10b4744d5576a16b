"""Summarise the attention-guidance sweep: attention mass on negation words (guided vs unguided heads,
before and after fine-tuning) and accuracy on negated vs plain questions.

    python experiments/attention_guidance/report.py [--runs runs/attention-guidance]

The corpus is the negated questions of the BeliefBank test split, written to the runs directory (it is
derived from the release, so it is not kept in the project).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from guidetune.analysis.attention import attention_mass, default_layers
from guidetune.analysis.common import load_any
from guidetune.patterns import TokenSet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/attention-guidance")
    ap.add_argument("--beliefbank", default="../shared/data/beliefbank")
    a = ap.parse_args()
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.tasks import TASKS

    runs = sorted(p for p in Path(a.runs).iterdir() if (p / "results.json").exists())
    _, base, tok = load_any("minilm")
    task = build_plugin(TASKS, PluginSpec("beliefbank", {"data": a.beliefbank, "negation": "fraction",
                                                         "negation_fraction": 0.5}))
    task.setup(tok)
    texts = [q.text for q in task.questions("test") if q.negated]
    (Path(a.runs) / "negated_test_questions.txt").write_text("\n".join(texts) + "\n")
    ts = TokenSet.load("negation", tok)
    names = default_layers(base)
    before, n = attention_mass(base, tok, texts, ts, names, batch_size=64)
    print(f"corpus: {n} negated test questions; mass = mean attention probability on negation tokens\n")
    print("| run | heads 0-2 (guided) before -> after | heads 3-11 before -> after | head 0 | "
          "acc. negated | acc. plain | F1 | multi-hop cons. | constraint cons. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        _, model, _ = load_any(str(run))
        after, _ = attention_mass(model, tok, texts, ts, names, batch_size=64)
        m = json.loads((run / "results.json").read_text())["metrics"]
        g_b, g_a = before[:, :3].mean(), after[:, :3].mean()
        u_b, u_a = before[:, 3:].mean(), after[:, 3:].mean()
        h0 = f"{before[:, 0].mean():.3f} -> {after[:, 0].mean():.3f}"
        fmt = lambda k: f"{m[k]:.3f}" if m.get(k) is not None else "-"  # noqa: E731
        print(f"| {run.name} | {g_b:.3f} -> {g_a:.3f} | {u_b:.3f} -> {u_a:.3f} | {h0} | {fmt('accuracy_negated')} | "
              f"{fmt('accuracy_plain')} | {fmt('f1')} | {fmt('multihop_consistency')} | {fmt('constraint_consistency')} |")
        np.save(run / "negation_mass.npy", after)


if __name__ == "__main__":
    main()
