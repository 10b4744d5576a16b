"""``guidetune demo``: plain vs. regularized fine-tuning of the packaged MiniLM, as one table."""
from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from .config import load_config
from .experiment import run_training

DEMO_CONFIGS = ("demo_plain.yaml", "demo_l1.yaml")


def config_path(name: str) -> Path:
    return Path(str(resources.files("guidetune") / "data" / "configs" / name))


def results_table(rows: list[tuple[str, dict]], layer: str) -> str:
    head = f"| run | accuracy | F1 | near-zero fraction ({layer}) | Hoyer ({layer}) |"
    lines = [head, "|" + "---|" * 5]
    for name, res in rows:
        m, s = res["metrics"], res.get("sparsity", {}).get(layer, {})
        lines.append(f"| {name} | {m['accuracy']:.3f} | {m.get('f1', m['f1_macro']):.3f} | "
                     f"{s.get('near_zero', float('nan')):.3f} | {s.get('hoyer', float('nan')):.3f} |")
    return "\n".join(lines)


def run_demo(output_dir: str = "runs/demo") -> list[tuple[str, dict]]:
    rows = []
    for name in DEMO_CONFIGS:
        cfg = load_config(config_path(name), [f"output_dir={output_dir}"])
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # the demo always trains afresh
        print(f"== {cfg.name}: {config_path(name)}")
        rows.append((cfg.name, run_training(cfg)))
    layer = next(iter(rows[0][1].get("sparsity", {"encoder.layers.5.out": 0})))
    print()
    print(results_table(rows, layer))
    print(f"\nrun directories: {output_dir}/<run>/ (config.yaml, metrics.jsonl, results.json, model/)")
    return rows
