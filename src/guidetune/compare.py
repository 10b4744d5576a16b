"""``guidetune compare RUN_A... --vs RUN_B...``: per metric, the difference between two variants with
95% intervals, a test across seeds and Holm's correction over the table (see
:mod:`guidetune.evaluation.significance` for the statistics).

Per-item scores come from each run's ``predictions.jsonl`` (BeliefBank, multiple-choice and seq2seq
tasks write one); items are matched by their question/prompt, and runs scored on different items are
refused. Multi-hop consistency is recomputed per check from the recorded edge and multi-hop answers and
resampled by check (each model has its own checks). Metrics without per-item scores (constraint
consistency, sparsity, tasks that write no predictions) get the across-seed test only.
"""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import GuidetuneError
from .evaluation.significance import (N_RESAMPLES, SEED_FALLBACK, f1_components, holm, independent_difference,
                                      paired_difference, seed_test)
from .runs import RunDir, atomic_write

COUNT_SUFFIXES = ("n", "checks", "questions", "applicable", "tokens")
NOT_DISTINGUISHABLE = "not distinguishable at 95%"


def is_count(key: str) -> bool:
    """``n``, ``edge_n``, ``multihop_checks``...: counts, not metrics (``accuracy_plain`` is a metric)."""
    return any(key == c or key.endswith("_" + c) for c in COUNT_SUFFIXES)


@dataclass
class Items:
    """Per-item components of one metric in one run; ``paired`` = keyed items shared by every run."""

    keys: list
    components: np.ndarray  # [n, c]
    metric: str  # "mean" | "f1"
    paired: bool = True


@dataclass
class Run:
    path: Path
    seed: int | None
    values: dict[str, float]
    items: dict[str, Items] = field(default_factory=dict)


def _predictions(path: Path) -> list[dict]:
    f = path / "predictions.jsonl"
    if not f.exists():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _task_config(path: Path) -> dict:
    try:
        return (yaml.safe_load((path / "config.yaml").read_text()) or {}).get("task", {}) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _beliefbank_items(recs: list[dict], k: int) -> dict[str, Items]:
    from .evaluation.consistency import multihop_checks

    out: dict[str, Items] = {}
    groups = {"": [r for r in recs if r["kind"] == "fact"], "edge_": [r for r in recs if r["kind"] == "edge"]}
    for prefix, rs in groups.items():
        if not rs:
            continue
        keys = [(r["question"], r["gold"]) for r in rs]
        gold, pred = [r["gold"] for r in rs], [r["pred"] for r in rs]
        out[f"{prefix}f1"] = Items(keys, f1_components(gold, pred), "f1")
        out[f"{prefix}accuracy"] = Items(keys, np.array([[g == p] for g, p in zip(gold, pred)], float), "mean")
    for tag, neg in (("negated", True), ("plain", False)):
        rs = [r for r in groups[""] if r.get("negated") == neg]
        if rs and any(r.get("negated") for r in groups[""]):
            out[f"accuracy_{tag}"] = Items([(r["question"], r["gold"]) for r in rs],
                                           np.array([[r["gold"] == r["pred"]] for r in rs], float), "mean")
    edges = {(f"IsA,{r['subject']}", r["target"]): bool(r["pred"]) for r in groups["edge_"]}
    pairs = {(f"IsA,{r['subject']}", r["target"]): bool(r["pred"]) for r in recs if r["kind"] == "multihop"}
    if edges:
        checks = multihop_checks(edges, pairs, k)
        if len(checks):
            out["multihop_consistency"] = Items([], checks.astype(float)[:, None], "mean", paired=False)
    return out


def _choice_items(recs: list[dict]) -> dict[str, Items]:
    keys = [(r["prompt"], tuple(r["classes"])) for r in recs]
    ans = [r["answer_index"] for r in recs]
    return {"accuracy": Items(keys, np.array([[r["pred"] == a] for r, a in zip(recs, ans)], float), "mean"),
            "accuracy_norm": Items(keys, np.array([[r["pred_norm"] == a] for r, a in zip(recs, ans)], float), "mean"),
            "correct_logprob": Items(keys, np.array([[r["logprob"][a]] for r, a in zip(recs, ans)], float), "mean")}


def _seq2seq_items(recs: list[dict]) -> dict[str, Items]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r["target"], r["prediction"]) for r in recs]
    keys = [(r["source"], r["target"]) for r in recs]
    return {m: Items(keys, np.array([[s[m].fmeasure] for s in scores]), "mean") for m in ("rouge1", "rouge2", "rougeL")}


def load_run(path: str | Path, metrics_key: str = "metrics") -> Run:
    """A finished run's metrics and per-item scores."""
    path = Path(path)
    run = RunDir(path)
    if not run.finished():
        raise GuidetuneError(f"compare: '{path}' is not a finished run directory (no results.json)")
    res = run.read_results()
    values = {k: float(v) for k, v in res.get(metrics_key, {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and not is_count(k)}
    for layer, s in res.get("sparsity", {}).items():
        short = layer.replace("encoder.layers.", "enc").replace("decoder.layers.", "dec")
        values[f"hoyer[{short}]"], values[f"near_zero[{short}]"] = s["hoyer"], s["near_zero"]
    recs = _predictions(path)
    items: dict[str, Items] = {}
    if recs and "kind" in recs[0]:
        items = _beliefbank_items(recs, int(_task_config(path).get("multihop_k", 9)))
    elif recs and "answer_index" in recs[0]:
        items = _choice_items(recs)
    elif recs and "prediction" in recs[0]:
        items = _seq2seq_items(recs)
    return Run(path, res.get("seed"), values, items)


@dataclass
class Row:
    metric: str
    a: float
    b: float
    diff: float
    low: float | None
    high: float | None
    low_seeds: float | None
    high_seeds: float | None
    test: str
    p: float | None
    p_holm: float | None = None
    seeds: tuple[int, int] = (0, 0)

    @property
    def verdict(self) -> str:
        if self.p_holm is None:
            return "no test possible"
        if self.p_holm >= 0.05:
            return NOT_DISTINGUISHABLE
        return "A higher at 95%" if self.diff > 0 else "A lower at 95%"


def _aligned(runs: list[Run], metric: str) -> list[np.ndarray]:
    """Component arrays of ``metric`` in the first run's item order; refuses different item sets."""
    ref = runs[0].items[metric]
    order = {k: i for i, k in enumerate(ref.keys)}
    out = []
    for r in runs:
        it = r.items[metric]
        if it.keys == ref.keys:
            out.append(it.components)
            continue
        if len(it.keys) != len(ref.keys) or set(it.keys) != set(order) or len(order) != len(ref.keys):
            extra = (next((k for k in it.keys if k not in order), None)
                     or next((k for k in ref.keys if k not in set(it.keys)), None))
            why = (f"e.g. {str(extra[0])[:60]!r} is in one only" if extra else
                   "the same questions in another order, with repeats that cannot be matched")
            raise GuidetuneError(
                f"compare: {r.path} and {runs[0].path} were evaluated on different items for '{metric}' "
                f"({len(it.keys)} vs {len(ref.keys)}; {why}); paired statistics need the same test items")
        perm = np.array([order[k] for k in it.keys])
        arr = np.empty_like(it.components)
        arr[perm] = it.components
        out.append(arr)
    return out


def _seed_interval(a: list[float], b: list[float], seed: int = 0) -> tuple[float | None, float | None]:
    if len(a) < 2 or len(b) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    da = np.asarray(a)[rng.integers(0, len(a), (N_RESAMPLES, len(a)))].mean(1)
    db = np.asarray(b)[rng.integers(0, len(b), (N_RESAMPLES, len(b)))].mean(1)
    lo, hi = np.percentile(da - db, [2.5, 97.5])
    return float(lo), float(hi)


def compare_runs(a: list[Run], b: list[Run], metrics: list[str] | None = None, seed: int = 0) -> list[Row]:
    """One row per metric shared by every run (``metrics`` restricts and orders them); Holm over the rows."""
    shared = [m for m in a[0].values if all(m in r.values for r in a + b)]
    for m in a[0].items:  # e.g. accuracy_negated computed from items only
        if m not in shared and all(m in r.items for r in a + b):
            shared.append(m)
    if metrics:
        missing = [m for m in metrics if m not in shared]
        if missing:
            raise GuidetuneError(f"compare: metric '{missing[0]}' is not reported by every run. Available: "
                                 f"{', '.join(shared)}")
        shared = list(metrics)
    rows = [_row(m, a, b, seed) for m in shared]
    for r, p in zip(rows, holm([r.p for r in rows])):
        r.p_holm = p
    return rows


def _row(m: str, a: list[Run], b: list[Run], seed: int) -> Row:
    ka, kb = len(a), len(b)
    if all(m in r.items for r in a + b):
        kind = a[0].items[m]
        if kind.paired:
            comps = _aligned(a + b, m)
            d = paired_difference(comps[:ka], comps[ka:], kind.metric, seed=seed)
            how = "paired bootstrap over {} items".format(len(comps[0]))
        else:
            comps = [r.items[m].components for r in a + b]
            d = independent_difference(comps[:ka], comps[ka:], kind.metric, seed=seed)
            how = "bootstrap over each run's checks"
        from .evaluation.significance import METRICS

        per_run = [float(METRICS[kind.metric](c.sum(0), len(c))) for c in comps]
        p = seed_test(per_run[:ka], per_run[ka:], seed=seed)
        test = f"permutation test over seeds ({ka} vs {kb})" if p is not None else f"{how} ({SEED_FALLBACK})"
        return Row(m, d.a, d.b, d.estimate, d.low, d.high, d.low_seeds, d.high_seeds, test,
                   p if p is not None else d.p_items, seeds=(ka, kb))
    va, vb = [r.values[m] for r in a], [r.values[m] for r in b]
    p = seed_test(va, vb, seed=seed)
    lo, hi = _seed_interval(va, vb, seed)
    test = (f"permutation test over seeds ({ka} vs {kb}); no per-item scores" if p is not None
            else "no test: fewer than 2 seeds on a side and no per-item scores")
    return Row(m, float(np.mean(va)), float(np.mean(vb)), float(np.mean(va) - np.mean(vb)), None, None, lo, hi,
               test, p, seeds=(ka, kb))


def _ci(lo, hi) -> str:
    return "—" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"


def _p(p) -> str:
    return "—" if p is None else f"{p:.3g}"


HEADER = ["metric", "A", "B", "A − B", "95% CI (items)", "95% CI (items + seeds)", "p", "p (Holm)", "verdict", "test"]


def _cells(r: Row) -> list[str]:
    return [r.metric, f"{r.a:.4f}", f"{r.b:.4f}", f"{r.diff:+.4f}", _ci(r.low, r.high), _ci(r.low_seeds, r.high_seeds),
            _p(r.p), _p(r.p_holm), r.verdict, r.test]


def markdown(rows: list[Row], title: str = "") -> str:
    lines = ([title, ""] if title else []) + ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    lines += ["", "A − B: difference of the seed-averaged metric. CI (items): paired bootstrap over the test items "
              f"({N_RESAMPLES:,} resamples; multi-hop consistency: each run's checks resampled). CI (items + seeds): "
              "seeds resampled as well (>= 2 seeds a side). p: permutation test across seeds (scipy, exact when "
              "few rearrangements exist; 3 vs 3 seeds cannot go below 0.10), or the item bootstrap when a side has "
              "one seed. Holm over the rows of this table; the verdict reads the Holm p-value."]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row], extra: dict | None = None) -> str:
    buf = io.StringIO()
    cols = list(extra or {}) + ["metric", "a", "b", "diff", "ci_low", "ci_high", "ci_seeds_low", "ci_seeds_high",
                               "p", "p_holm", "verdict", "test"]
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow(list((extra or {}).values()) + [r.metric, r.a, r.b, r.diff, r.low, r.high, r.low_seeds, r.high_seeds,
                                                    r.p, r.p_holm, r.verdict, r.test])
    return buf.getvalue()


def html_text(rows: list[Row], title: str) -> str:
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>\n" for r in rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>td,th{border:1px solid #ccc;padding:3px 6px;font:13px sans-serif}table{border-collapse:collapse}"
            f"</style><h2>{html.escape(title)}</h2><table><tr>{head}</tr>\n{body}</table>\n")


def run_compare(a_paths: list[str], b_paths: list[str], out: str | None = None, metrics: list[str] | None = None,
                seed: int = 0) -> tuple[list[Row], str]:
    a, b = [load_run(p) for p in a_paths], [load_run(p) for p in b_paths]
    rows = compare_runs(a, b, metrics, seed)
    title = f"A = {', '.join(Path(p).name for p in a_paths)}  vs  B = {', '.join(Path(p).name for p in b_paths)}"
    md = markdown(rows, f"**{title}**")
    if out:
        atomic_write(Path(out) / "compare.md", md)
        atomic_write(Path(out) / "compare.csv", csv_text(rows))
        atomic_write(Path(out) / "compare.html", html_text(rows, title))
    return rows, md


def sweep_significance(out: Path, groups: dict[str, list[Path]], metrics: list[str]) -> list[str]:
    """Every configuration against the sweep's first one; writes significance.csv, returns Markdown lines."""
    labels = [lab for lab, paths in groups.items() if paths]
    if len(labels) < 2:
        return []
    loaded = {lab: [load_run(p) for p in groups[lab]] for lab in labels}
    base, table = labels[0], []
    for lab in labels[1:]:
        try:
            rows = compare_runs(loaded[lab], loaded[base], [m for m in metrics if _everywhere(m, loaded[lab] + loaded[base])])
        except GuidetuneError as e:
            return ["", f"Significance vs '{base}': not computed ({e})"]
        table += [(lab, r) for r in rows]
    for (_, r), p in zip(table, holm([r.p for _, r in table])):
        r.p_holm = p
    parts = [csv_text([r], {"configuration": lab, "baseline": base}).splitlines(keepends=True) for lab, r in table]
    atomic_write(out / "significance.csv", "".join(parts[0][:1] + [p[1] for p in parts]))
    md = ["", f"Significance vs the first configuration '{base}' (A = row's configuration, B = '{base}'; Holm over "
          "every row of this table):", "", "| configuration | " + " | ".join(HEADER) + " |", "|" + "---|" * (len(HEADER) + 1)]
    md += [f"| {lab} | " + " | ".join(_cells(r)) + " |" for lab, r in table]
    return md


def _everywhere(m: str, runs: list[Run]) -> bool:
    return all(m in r.values or m in r.items for r in runs)
