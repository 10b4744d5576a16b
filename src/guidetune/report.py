"""``guidetune report RUN_DIR... --out report.html``: one self-contained HTML file.

Sections: a metrics table (one row per run), the configuration fields that differ between the runs,
and one loss curve per logged term (``loss/task``, ``loss/l1``, ...) with a line per run. Images are
embedded as base64 PNG; the page loads nothing from the network.
"""
from __future__ import annotations

import base64
import html
import json
import io
from pathlib import Path


from .config import read_yaml
from .errors import GuidetuneError
from .runs import RunDir, atomic_write, command_line


def _flat(d, prefix: str = "") -> dict[str, object]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = d
    return out


def config_differences(configs: list[dict]) -> dict[str, list]:
    """Dotted keys whose values differ between configs (the run name and source excluded)."""
    flats = [_flat(c) for c in configs]
    keys = sorted(set().union(*flats))
    return {k: [f.get(k) for f in flats] for k in keys
            if k not in ("name", "source") and len({repr(f.get(k)) for f in flats}) > 1}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


_TERM_LABELS = {"loss/task": "task loss (cross-entropy, nats)", "loss": "total training loss (nats)"}


def _task_loss(records: list[dict]) -> list[dict]:
    """A run without regularizers logs only HF's ``loss``, which then is its task loss: show it as such."""
    if any("loss/task" in r for r in records):
        return records
    return [{**r, "loss/task": r["loss"]} if r.get("loss") is not None else r for r in records]


def loss_curves(runs: list[tuple[str, list[dict]]], model: str = "") -> str | None:
    """One panel per logged loss term (task loss first), a line per run; every run's task loss shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(name, _task_loss(recs)) for name, recs in runs]
    terms = sorted({k for _, recs in runs for r in recs for k in r if k.startswith("loss/") and k.count("/") == 1},
                   key=lambda k: (k != "loss/task", k))
    if not terms:
        return None
    fig, axes = plt.subplots(1, len(terms), figsize=(4.4 * len(terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for name, recs in runs:
            pts = [(r["step"], r[term]) for r in recs if term in r and r[term] is not None]
            if pts:
                ax.plot(*zip(*pts), label=name, lw=1.3, marker="." if len(pts) < 30 else None)
        ax.set_title(term if term == "loss/task" else f"{term} (regularizer term, unweighted)", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(_TERM_LABELS.get(term, f"{term.split('/', 1)[1]} term value"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="run", title_fontsize=7)
    fig.suptitle(f"Training losses per logged step{f' ({model})' if model else ''}", fontsize=10)
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


def metric_bars(names: list[str], metrics: list[str], rows: list[list]) -> str | None:
    """Final task metrics of every run, grouped bars per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not metrics:
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(metrics) * max(1, len(names)) ** 0.5 + 2), 3.4))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(metrics))
    for i, (name, row) in enumerate(zip(names, rows)):
        vals = [v if isinstance(v, (int, float)) else np.nan for v in row[1:]]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    ax.set_xticks(x, metrics, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("metric (evaluation set)")
    ax.set_ylabel("value (fraction for rates and scores)")
    ax.set_title("Final metrics per run", fontsize=10)
    ax.legend(fontsize=7, title="run", title_fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(run_dirs: list[str], out: str | Path) -> Path:
    runs = []
    for d in run_dirs:
        run = RunDir(d)
        if not run.exists():
            raise GuidetuneError(f"not a run directory (no config.yaml): '{d}'")
        runs.append((run.path.name, run, read_yaml(run.config)))
    metrics = sorted({k for _, r, _ in runs if r.finished() for k, v in r.read_results().get("metrics", {}).items()
                      if isinstance(v, (int, float))})
    rows = []
    for name, r, _ in runs:
        res = r.read_results() if r.finished() else {}
        m = res.get("metrics", {})
        rows.append([name] + [m.get(k, "") if m.get(k) is not None else "" for k in metrics])
    diffs = config_differences([c for _, _, c in runs])
    models = sorted({str((c.get("model") or {}).get("name", "")) for _, _, c in runs} - {""})
    curves = loss_curves([(name, r.read_metrics()) for name, r, _ in runs],
                         model="model " + ", ".join(Path(m).name or m for m in models) if models else "")
    bars = metric_bars([n for n, _, _ in runs], metrics, rows)
    from . import __version__

    # Provenance, as an output set's manifest would hold it (the report is one file, written atomically).
    manifest = {"guidetune_version": __version__, "command": command_line(),
                "inputs": {"runs": [{"name": n, "path": str(r.path.resolve()), "run_id": r.read_meta().get("run_id")}
                                    for n, r, _ in runs]}}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>guidetune report</title>",
        "<!-- guidetune-manifest " + html.escape(json.dumps(manifest), quote=False).replace("--", "- -") + " -->",
        "<style>",
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}",
        "</style></head><body><h1>guidetune report</h1>",
        f"<p>{len(runs)} runs: {', '.join(html.escape(n) for n, _, _ in runs)}</p>",
        "<h2>Metrics</h2>", _table(["run"] + metrics, rows),
        f"<img alt='final metrics per run' src='{bars}'>" if bars else "",
        "<h2>Configuration differences</h2>",
        _table(["field"] + [n for n, _, _ in runs], [[k] + v for k, v in diffs.items()]) if diffs
        else "<p>The configurations are identical apart from their names.</p>",
        "<h2>Loss terms</h2>",
        f"<img alt='loss curves' src='{curves}'>" if curves else "<p>No logged loss terms.</p>",
        "</body></html>",
    ]
    out = Path(out)
    atomic_write(out, "\n".join(parts))
    return out
