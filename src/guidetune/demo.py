"""``guidetune demo``: the packaged MiniLM fine-tuned several ways, compared in one table.

``belief`` (default, SpARC on the built-in mini belief bank): adapter; + L1; + L1 + contrastive over
adjacent pairs. Columns: F1, multi-hop and constraint consistency, activation sparsity.
``sentiment``: plain full fine-tuning vs + L1 on the demo sentiment set.
"""
from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from .config import load_config
from .experiment import run_training

DEMOS = {
    "belief": ("belief_adapter.yaml", "belief_l1.yaml", "belief_l1_contrastive.yaml"),
    "sentiment": ("demo_plain.yaml", "demo_l1.yaml"),
}


def config_path(name: str) -> Path:
    return Path(str(resources.files("guidetune") / "data" / "configs" / name))


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def results_table(rows: list[tuple[str, dict]], layer: str) -> str:
    belief = "multihop_consistency" in rows[0][1]["metrics"]
    cols = ["F1", "accuracy"] + (["multi-hop consistency", "constraint consistency"] if belief else [])
    cols += [f"near-zero fraction ({layer})", f"Hoyer ({layer})"]
    lines = ["| run | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, res in rows:
        m, s = res["metrics"], res.get("sparsity", {}).get(layer, {})
        vals = [m.get("f1", m.get("f1_macro")), m.get("accuracy")]
        if belief:
            vals += [m.get("multihop_consistency"), m.get("constraint_consistency")]
        vals += [s.get("near_zero"), s.get("hoyer")]
        lines.append(f"| {name} | " + " | ".join(_f(v) for v in vals) + " |")
    return "\n".join(lines)


def run_demo(output_dir: str = "runs/demo", which: str = "belief") -> list[tuple[str, dict]]:
    rows = []
    for name in DEMOS[which]:
        cfg = load_config(config_path(name), [f"output_dir={output_dir}"])
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # the demo always trains afresh
        print(f"== {cfg.name}: {config_path(name)}", flush=True)
        rows.append((cfg.name, run_training(cfg)))
    layer = next(iter(rows[0][1].get("sparsity", {"encoder.layers.5.out": 0})))
    print()
    print(results_table(rows, layer))
    print(f"\nrun directories: {output_dir}/<run>/ (config.yaml, metrics.jsonl, results.json, predictions.jsonl, model/)")
    return rows
