import csv
import json

import numpy as np
import pytest
import yaml

from guidetune.cli import main
from guidetune.compare import NOT_DISTINGUISHABLE, compare_runs, load_run, sweep_significance
from guidetune.evaluation.consistency import multihop_consistency

EDGES = [("dog", "IsA,mammal", True), ("mammal", "IsA,animal", True), ("animal", "CapableOf,move", True),
         ("animal", "IsA,plant", False)]


def _run(path, seed, correct, n=60, edges=EDGES, mh=(("dog", "IsA,animal", True), ("dog", "CapableOf,move", False),
                                                     ("dog", "IsA,plant", False), ("mammal", "CapableOf,move", True)),
         questions=None):
    """A fake finished BeliefBank run: item i answered right iff correct[i]."""
    path.mkdir(parents=True)
    qs = questions or [f"Is thing {i} a dog?" for i in range(n)]
    gold = [i % 3 == 0 for i in range(n)]
    recs = [{"kind": "fact", "subject": f"t{i}", "target": "IsA,dog", "question": q, "negated": False,
             "gold": g, "pred": g if c else not g} for i, (q, g, c) in enumerate(zip(qs, gold, correct))]
    recs += [{"kind": "edge", "subject": s, "target": t, "question": f"{s} {t}?", "negated": False, "gold": a,
              "pred": a} for s, t, a in edges]
    recs += [{"kind": "multihop", "subject": s, "target": t, "question": f"{s} {t}?", "negated": False, "gold": a,
              "pred": a} for s, t, a in mh]
    acc = float(np.mean(correct))
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "beliefbank", "multihop_k": 9}}))
    (path / "results.json").write_text(json.dumps({"seed": seed, "metrics": {
        "accuracy": acc, "f1": 0.5, "n": n, "edge_n": 4, "constraint_consistency": 0.9 + seed / 100,
        "multihop_checks": 4, "accuracy_plain": acc}}))
    return path


def test_compare_table_reads_items_checks_and_seeds(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = [_run(tmp_path / f"a{s}", s, rng.random(60) < 0.9) for s in range(2)]
    b = [_run(tmp_path / f"b{s}", s, rng.random(60) < 0.6) for s in range(2)]
    rows = {r.metric: r for r in compare_runs([load_run(p) for p in a], [load_run(p) for p in b])}
    assert set(rows) == {"accuracy", "f1", "constraint_consistency", "edge_f1", "edge_accuracy", "multihop_consistency",
                         "accuracy_plain"}  # counts (n, edge_n, multihop_checks) are not compared
    acc = rows["accuracy"]
    assert acc.a == pytest.approx(np.mean([load_run(p).values["accuracy"] for p in a]))
    assert acc.diff == pytest.approx(acc.a - acc.b) and acc.low < acc.diff < acc.high
    assert acc.low_seeds is not None and acc.test == "permutation test over seeds (2 vs 2)"
    assert acc.p == pytest.approx(1 / 3)  # 2 vs 2 seeds: 6 rearrangements, the observed one and its mirror
    assert acc.verdict == NOT_DISTINGUISHABLE and acc.p_holm >= acc.p
    edges = {(f"IsA,{s}", t): x for s, t, x in EDGES}
    ref = multihop_consistency(edges, {("IsA,dog", "IsA,animal"): True, ("IsA,dog", "CapableOf,move"): False,
                                       ("IsA,dog", "IsA,plant"): False, ("IsA,mammal", "CapableOf,move"): True})
    assert rows["multihop_consistency"].a == pytest.approx(ref["consistency"])
    assert rows["constraint_consistency"].low is None and "no per-item scores" in rows["constraint_consistency"].test
    assert main(["compare"] + [str(p) for p in a] + ["--vs"] + [str(p) for p in b] + ["--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert NOT_DISTINGUISHABLE in md and "| accuracy |" in md
    assert "<table>" in (tmp_path / "cmp" / "compare.html").read_text()
    assert len(list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))) == 7


def test_one_seed_a_side_falls_back_to_the_item_bootstrap(tmp_path):
    a = _run(tmp_path / "a", 0, [True] * 200, n=200)
    b = _run(tmp_path / "b", 0, [i % 2 == 0 for i in range(200)], n=200)
    row = next(r for r in compare_runs([load_run(a)], [load_run(b)]) if r.metric == "accuracy")
    assert "fewer than 2 seeds on a side" in row.test and "paired bootstrap over 200 items" in row.test
    assert row.diff == pytest.approx(0.5) and row.p < 1e-3 and row.verdict == "A higher at 95%"


def test_runs_on_different_items_are_refused_in_one_line(tmp_path, capsys):
    a = _run(tmp_path / "a", 0, [True] * 10, n=10)
    b = _run(tmp_path / "b", 0, [True] * 10, n=10, questions=[f"Is other {i} a dog?" for i in range(10)])
    assert main(["compare", str(a), "--vs", str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluated on different items" in err[0] and "paired statistics need the same" in err[0]


def test_same_items_in_another_order_are_aligned(tmp_path):
    qs = [f"Is thing {i} a dog?" for i in range(30)]
    a = _run(tmp_path / "a", 0, [True] * 30, n=30, questions=qs)
    b = _run(tmp_path / "b", 0, [i % 2 == 0 for i in range(30)], n=30, questions=qs)
    lines = (b / "predictions.jsonl").read_text().splitlines(keepends=True)
    (b / "predictions.jsonl").write_text("".join(lines[:30][::-1] + lines[30:]))  # fact items reversed
    row = next(r for r in compare_runs([load_run(a)], [load_run(b)]) if r.metric == "accuracy")
    assert row.diff == pytest.approx(0.5)
    fixed = next(r for r in compare_runs([load_run(b)], [load_run(b)]) if r.metric == "accuracy")
    assert fixed.diff == 0 and fixed.low == 0 and fixed.high == 0
    # aligned, the paired interval is the one of the per-item differences (not of shuffled pairs)
    assert row.high - row.low == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 30), rel=0.25)


def test_sweep_significance_rows_against_the_first_configuration(tmp_path):
    groups = {"base": [_run(tmp_path / f"base{s}", s, [True] * 30, n=30) for s in range(2)],
              "l1": [_run(tmp_path / f"l1{s}", s, [i % 5 > 0 for i in range(30)], n=30) for s in range(2)]}
    md = sweep_significance(tmp_path, groups, ["accuracy", "constraint_consistency"])
    assert any(line.startswith("| l1 | accuracy |") for line in md)
    rows = list(csv.DictReader((tmp_path / "significance.csv").open()))
    assert [(r["configuration"], r["baseline"], r["metric"]) for r in rows] == [
        ("l1", "base", "accuracy"), ("l1", "base", "constraint_consistency")]
    assert float(rows[0]["diff"]) == pytest.approx(-0.2)


@pytest.mark.slow
def test_compare_reads_real_beliefbank_runs(tmp_path, tiny_dirs):
    from conftest import tiny_config
    from guidetune.config import load_config
    from guidetune.experiment import run_training

    runs = []
    for name, lr in (("a", 1e-3), ("b", 1e-5)):
        cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], {"train": "x", "eval": "x"}, name=name,
                                      task={"name": "beliefbank", "limit_train": 64, "max_length": 40,
                                            "negation": "balance"},
                                      train={"max_steps": 3, "batch_size": 8, "lr": lr}))
        run_training(cfg)
        runs.append(load_run(tmp_path / "runs" / name))
    rows = {r.metric: r for r in compare_runs([runs[0]], [runs[1]])}
    for run, side in ((runs[0], "a"), (runs[1], "b")):
        res = json.loads((run.path / "results.json").read_text())["metrics"]
        for m in ("f1", "accuracy", "edge_f1", "edge_accuracy", "accuracy_negated", "accuracy_plain"):
            assert getattr(rows[m], side) == pytest.approx(res[m], abs=1e-12)  # items rebuild the reported metric
        if "multihop_consistency" in rows:  # both models believed some chains (a random tiny model may not)
            assert getattr(rows["multihop_consistency"], side) == pytest.approx(res["multihop_consistency"])
    assert "paired bootstrap over" in rows["f1"].test
