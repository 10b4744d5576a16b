"""Phase 2 of the SpARC table: seeds 1 and 2 for the best L1 row and the best L1 + contrastive row.

    python experiments/sparc/phase2.py        (after `guidetune sweep experiments/sparc/sweep.yaml`)

"Best" = highest multi-hop consistency in phase 1 (seed 0), the quantity SpARC sets out to improve
(ties broken by F1).
Writes runs/sparc-table/sweep_phase2.yaml (the phase-1 sweep with those seeds added) and runs it;
finished runs are skipped, so only the new seeds train, and the summary covers every row.
"""
import csv
from pathlib import Path

import yaml

from guidetune.sweep import run_sweep

here = Path(__file__).resolve().parent
out = Path("runs/sparc-table")
rows = list(csv.DictReader((out / "summary.csv").open()))
score = {r["label"]: (float(r["multihop_consistency_mean"]), float(r["f1_mean"])) for r in rows}  # ties: F1
best_l1 = max((k for k in score if k.startswith("adapter+l1-")), key=score.get)
best_c = max((k for k in score if k.startswith("adapter+l1+contrastive-")), key=score.get)
print(f"best L1 row: {best_l1}; best contrastive row: {best_c}")
spec = yaml.safe_load((here / "sweep.yaml").read_text())
spec["base"] = str(here / spec["base"])
for v in spec["variants"]:
    if v["label"] in (best_l1, best_c):
        v["seeds"] = [0, 1, 2]
path = out / "sweep_phase2.yaml"
path.write_text(yaml.safe_dump(spec, sort_keys=False))
run_sweep(path)
print((out / "summary.md").read_text())
