"""``guidetune sweep``: a base config x named variants x a grid of overrides x seeds, resumable.

    base: sparc_base.yaml          # relative to the sweep file
    name: sparc-table              # runs go to <output_dir>/<name>/<label>-s<seed>/
    seeds: [0, 1, 2]
    grid: {train.lr: [1.0e-4, 1.0e-3]}          # optional cartesian product, crossed with every variant
    variants:                                    # optional; each a label and field values to set
      - {label: full, set: {finetune.mode: full}}
      - {label: adapter-l1, set: {regularizers: [{name: l1, weight: 0.05}]}, seeds: [0, 1, 2]}
    metrics: [f1, multihop_consistency]          # optional; default: every non-count metric
    plot: {x: train.data_fraction, metric: f1}   # optional line plot over a grid key (data paucity)

Finished runs (with results.json) are skipped and a run killed mid-training resumes from its last
checkpoint, so re-running a killed sweep continues it. The sweep writes ``runs.csv`` (one row per run),
``summary.csv`` and ``summary.md`` (mean and inter-quartile range per metric per configuration) and
``summary.png`` (bars of the means with IQR whiskers); every configuration is also compared with the first
one (95% intervals, seed test, Holm: :mod:`guidetune.compare`) in ``significance.csv`` and ``summary.md``.
"""
from __future__ import annotations

import csv
import io
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import apply_values, parse_config, read_yaml
from .errors import ConfigError, GuidetuneError, did_you_mean
from .runs import RunDir, atomic_write
from .spec import build, check, finish

log = logging.getLogger(__name__)
COUNT_KEYS = ("n", "checks", "questions", "applicable", "tokens", "items", "skipped")


@dataclass
class Variant:
    label: str
    set: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None


@dataclass
class SweepSpec:
    base: str
    name: str
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    output_dir: str | None = None
    metrics: list[str] | None = None
    plot: dict[str, str] | None = None  # {x: <grid key>, metric: <metric>}: a line per variant

    def __post_init__(self):
        e: list[str] = []
        for key, values in self.grid.items():
            check(e, isinstance(values, list) and len(values) > 0,
                  f"grid.{key}: expected a non-empty list of values, got {values!r}")
        check(e, len(self.seeds) > 0, "seeds: expected at least one seed, got []")
        check(e, self.metrics is None or len(self.metrics) > 0, "metrics: expected at least one metric, got []")
        if self.plot is not None:
            unknown = sorted(set(self.plot) - {"x", "metric"})
            check(e, not unknown and {"x", "metric"} <= set(self.plot),
                  f"plot: expected {{x: <grid key>, metric: <metric>}}, got {self.plot!r}")
            check(e, "x" not in self.plot or self.plot["x"] in self.grid,
                  f"plot.x: '{self.plot.get('x')}' is not a grid key." + did_you_mean(str(self.plot.get("x")), self.grid))
        finish(e)


@dataclass
class Planned:
    label: str
    seed: int
    config: Any  # ExperimentConfig
    variant: str = ""
    grid: dict = field(default_factory=dict)


def plan(path: str | Path, seeds: list[int] | None = None) -> tuple[SweepSpec, list[Planned]]:
    """Every run of the sweep, validated; all problems are reported together. ``seeds`` replaces the
    file's seeds (also per-variant ones), e.g. to finish two seeds of every cell before adding more."""
    path = Path(path)
    spec = build(SweepSpec, read_yaml(path), "sweep")
    if seeds is not None:
        spec.seeds = list(seeds)
        for v in spec.variants:
            v.seeds = None
    base_path = (path.parent / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
    base = read_yaml(base_path)
    out_dir = str(Path(spec.output_dir or base.get("output_dir", "runs")) / spec.name)
    variants = spec.variants or [Variant(label="")]
    keys = list(spec.grid)
    combos = list(itertools.product(*[spec.grid[k] for k in keys])) or [()]
    errors, runs, labels = [], [], set()
    for v in variants:
        for combo in combos:
            values = {**v.set, **dict(zip(keys, combo))}
            label = (v.label + "".join(f"-{k.split('.')[-1]}={c}" for k, c in zip(keys, combo))).strip("-") or "base"
            label = label.replace("/", "_").replace("\\", "_")  # a run name, one directory
            if label in labels:
                errors.append(f"sweep: configuration label '{label}' appears twice")
                continue
            labels.add(label)
            try:
                data = apply_values(base, values)
            except ConfigError as e:
                errors += [f"sweep variant '{v.label}': {m}" for m in e.messages]
                continue
            for seed in v.seeds or spec.seeds:
                try:
                    cfg = parse_config({**data, "name": f"{label}-s{seed}", "seed": seed, "output_dir": out_dir},
                                       source=str(base_path))
                except ConfigError as e:
                    errors += [f"sweep variant '{v.label}': {m}" for m in e.messages if m not in " ".join(errors)]
                    break
                runs.append(Planned(label, seed, cfg, v.label, dict(zip(keys, combo))))
    if errors:
        raise ConfigError(errors)
    return spec, runs


def run_sweep(path: str | Path, dry_run: bool = False, seeds: list[int] | None = None,
              rerun_changed: bool = False, workers: int = 1, launcher: str = "local", slurm: dict | None = None,
              cluster: str | None = None) -> Path:
    """Run every cell not finished with its current configuration. A cell finished (or started) with
    another configuration or other data is reported, and re-run only with ``rerun_changed``; without
    it the sweep stops before training anything, so no summary mixes old and new configurations."""
    from .experiment import run_state
    from .sweep_exec import check_launcher, execute

    check_launcher(workers, launcher)  # --workers 0, or slurm without submitit: before anything runs
    spec, runs = plan(path, seeds)
    out = runs[0].config.run_dir.parent
    states = [run_state(r.config) for r in runs]
    for i, (r, (state, changes)) in enumerate(zip(runs, states), 1):
        print(f"[{i}/{len(runs)}] {r.label} seed {r.seed}: {state}"
              + (f" ({', '.join(changes[:4])}{', ...' if len(changes) > 4 else ''})" if state == "changed" else ""),
              flush=True)
    changed = [f"{r.label}-s{r.seed}" for r, (state, _) in zip(runs, states) if state == "changed"]
    if changed and not rerun_changed and not dry_run:
        raise GuidetuneError(f"sweep: {len(changed)} run(s) were made with another configuration or data "
                             f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}); pass "
                             "--rerun-changed to run them again")
    todo = [(r.config.to_dict(), r.config.source, state == "resume", state == "changed")
            for r, (state, _) in zip(runs, states) if not dry_run and state != "done"]
    execute(todo, workers, launcher, folder=out, slurm=slurm, cluster=cluster)  # guidetune.sweep_exec
    if not dry_run:
        summarize(out, runs, spec.metrics)
        if spec.plot:
            line_plot(out, runs, spec.plot["x"], spec.plot["metric"])
    return out


def line_plot(out: Path, runs: list[Planned], x_key: str, metric: str) -> Path:
    """Mean of ``metric`` against grid key ``x_key``, one line per variant, inter-quartile band (seed Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[float, list[float]]] = {}
    for r in runs:
        run = RunDir(r.config.run_dir)
        if run.finished() and x_key in r.grid:
            value = _flatten(run.read_results()).get(metric)
            if value is not None:
                series.setdefault(r.variant, {}).setdefault(float(r.grid[x_key]), []).append(value)
    if not series:
        raise GuidetuneError(f"sweep.plot: no finished run has metric '{metric}' for grid key '{x_key}'")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for variant, pts in series.items():
        xs = sorted(pts)
        mean = [np.mean(pts[x]) for x in xs]
        lo = [np.percentile(pts[x], 25) for x in xs]
        hi = [np.percentile(pts[x], 75) for x in xs]
        ax.plot(xs, mean, marker="o", label=variant or "base")
        ax.fill_between(xs, lo, hi, alpha=0.2)
    xs_all = sorted({x for pts in series.values() for x in pts})
    if _logarithmic(xs_all):  # learning rates, weights: a log grid on a log axis
        ax.set_xscale("log")
    ax.set_xlabel(f"{x_key}{' (log scale)' if _logarithmic(xs_all) else ''}")
    ax.set_ylabel(f"{metric} (mean over seeds; band: inter-quartile range)")
    ax.set_title(f"{out.name}: {metric} against {x_key.split('.')[-1]}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="variant", title_fontsize=8)
    path = out / f"lines_{metric}.png"
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _logarithmic(xs: list[float]) -> bool:
    """A grid spread over at least a decade of positive values (1e-5, 1e-4, 1e-3): plot it on a log axis."""
    return len(xs) >= 3 and min(xs) > 0 and max(xs) / min(xs) >= 10


def _is_count(key: str) -> bool:
    """Counts (``n``, ``n_items``, ``multihop_checks``) are not summarised; ``pearson`` and ``accuracy_plain`` are."""
    parts = key.split("_")
    return parts[0] == "n" or parts[-1] in COUNT_KEYS


def _flatten(results: dict) -> dict[str, float]:
    row = {k: v for k, v in results.get("metrics", {}).items()
           if isinstance(v, (int, float)) and not _is_count(k)}
    for layer, s in results.get("sparsity", {}).items():
        short = layer.replace("encoder.layers.", "enc").replace("decoder.layers.", "dec")
        row[f"hoyer[{short}]"] = s["hoyer"]
        row[f"near_zero[{short}]"] = s["near_zero"]
    return row


def summarize(out: Path, runs: list[Planned], metrics: list[str] | None = None) -> dict:
    """Write runs.csv, summary.csv, summary.md and summary.png for the finished runs."""
    rows = []
    for r in runs:
        run = RunDir(r.config.run_dir)
        if run.finished():
            rows.append({"label": r.label, "seed": r.seed, **_flatten(run.read_results())})
    if not rows:
        raise GuidetuneError(f"sweep: no finished run under {out} to summarize")
    found = sorted({k for row in rows for k in row if k not in ("label", "seed")})
    for m in metrics or []:
        if m not in found:  # a misspelt metric would be an all-NaN column
            raise GuidetuneError(f"sweep.metrics: '{m}' is not a metric of these runs.{did_you_mean(m, found)}")
    cols = metrics or found
    labels = list(dict.fromkeys(r["label"] for r in rows))
    summary = {}
    for label in labels:
        vals = {c: np.array([r[c] for r in rows if r["label"] == label and r.get(c) is not None], dtype=float)
                for c in cols}
        summary[label] = {c: (float(v.mean()) if v.size else float("nan"),
                              float(np.subtract(*np.percentile(v, [75, 25]))) if v.size else float("nan"),
                              int(v.size)) for c, v in vals.items()}
    _write_csv(out / "runs.csv", ["label", "seed"] + cols, rows)
    flat = [{"label": lab, **{f"{c}_mean": m for c, (m, _, _) in s.items()},
             **{f"{c}_iqr": q for c, (_, q, _) in s.items()}, "seeds": max(n for _, _, n in s.values())}
            for lab, s in summary.items()]
    _write_csv(out / "summary.csv", ["label", "seeds"] + [f"{c}_{k}" for c in cols for k in ("mean", "iqr")], flat)
    md = ["| configuration | seeds | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for lab, s in summary.items():
        cells = [f"{m:.3f} ({q:.3f})" if n > 1 else f"{m:.3f}" for m, q, n in s.values()]
        md.append(f"| {lab} | {max(n for _, _, n in s.values())} | " + " | ".join(cells) + " |")
    md.append("\nCells: mean over seeds (inter-quartile range when there is more than one seed).")
    from .compare import sweep_significance  # vs the first configuration; also writes significance.csv

    md += sweep_significance(out, {lab: [r.config.run_dir for r in runs if r.label == lab
                                         and RunDir(r.config.run_dir).finished()] for lab in labels}, cols)
    atomic_write(out / "summary.md", "\n".join(md) + "\n")
    _bar_chart(out / "summary.png", summary, cols)
    return summary


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def _bar_chart(path: Path, summary: dict, cols: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summary)
    ncols = min(3, len(cols))
    nrows = -(-len(cols) // ncols)
    width = max(4.0, 0.45 * len(labels) + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(cols):]:
        ax.axis("off")
    for ax, c in zip(axes.flat, cols):
        means = [summary[lab][c][0] for lab in labels]
        iqr = [summary[lab][c][1] / 2 for lab in labels]
        ax.bar(range(len(labels)), means, yerr=iqr, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("configuration")
        ax.set_ylabel(f"{c} (mean; whiskers: IQR)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"sweep {path.parent.name}: mean over seeds per configuration", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
