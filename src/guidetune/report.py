"""``guidetune report RUN_DIR... --out report.html``: one self-contained HTML file.

Sections: a metrics table (one row per run), the configuration fields that differ between the runs,
and one loss curve per logged term (``loss/task``, ``loss/l1``, ...) with a line per run. Images are
embedded as base64 PNG; the page loads nothing from the network.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path


from .config import read_yaml
from .errors import GuidetuneError
from .runs import RunDir, atomic_write


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


def loss_curves(runs: list[tuple[str, list[dict]]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = sorted({k for _, recs in runs for r in recs for k in r if k.startswith("loss/") and k.count("/") == 1})
    if not terms:
        return None
    fig, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.2), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for name, recs in runs:
            pts = [(r["step"], r[term]) for r in recs if term in r and r[term] is not None]
            if pts:
                ax.plot(*zip(*pts), label=name, lw=1.3)
        ax.set_title(term)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
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
    curves = loss_curves([(name, r.read_metrics()) for name, r, _ in runs])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>guidetune report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}",
        "</style></head><body><h1>guidetune report</h1>",
        f"<p>{len(runs)} runs: {', '.join(html.escape(n) for n, _, _ in runs)}</p>",
        "<h2>Metrics</h2>", _table(["run"] + metrics, rows),
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
