"""Print the SpARC table from runs/sparc-table/*/results.json (mean over seeds; range when several).

    python experiments/sparc/table.py
"""
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

rows = defaultdict(list)
for f in sorted(Path("runs/sparc-table").glob("*/results.json")):
    r = json.loads(f.read_text())
    label = f.parent.name.rsplit("-s", 1)[0]
    m, sp = r["metrics"], r["sparsity"]
    rows[label].append([m["f1"], m["multihop_consistency"], m["multihop_checks"], m["constraint_consistency"],
                        m["edge_f1"], sp["encoder.layers.3.out"]["hoyer"], sp["encoder.layers.5.out"]["hoyer"],
                        sp["encoder.layers.5.out"]["near_zero"], r["parameters"]["trainable"], r["train"]["runtime_s"]])
order = ["head-only", "full", "last-layer", "lora", "adapter", "adapter+l1-middle", "adapter+l1-final", "adapter+l1-all",
         "adapter+l1+contrastive-linked", "adapter+l1+contrastive-adjacent", "adapter+l1+contrastive-embedding"]
print("| row | seeds | F1 | multi-hop consistency (checks) | constraint consistency | edge F1 | Hoyer L3 | Hoyer L5 "
      "| near-zero L5 | trainable params | train+eval s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for label in order:
    if label not in rows:
        continue
    a = np.array(rows[label], dtype=float)
    mean = a.mean(0)

    def cell(i, fmt="{:.3f}"):
        s = fmt.format(mean[i])
        return s + (f" [{fmt.format(a[:, i].min())}-{fmt.format(a[:, i].max())}]" if len(a) > 1 else "")

    print(f"| {label} | {len(a)} | {cell(0)} | {cell(1)} ({int(mean[2])}) | {cell(3)} | {cell(4)} | {cell(5)} | "
          f"{cell(6)} | {cell(7)} | {int(mean[8]):,} | {int(mean[9])} |")
