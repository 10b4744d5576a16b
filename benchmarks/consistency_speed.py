"""Multi-hop + constraint consistency on the full BeliefBank graph from a predictions file.

    python benchmarks/consistency_speed.py [--beliefbank ../shared/data/beliefbank] [--predictions FILE]

Without ``--predictions`` a synthetic predictions file is written first (gold answers with 15% flipped,
seeded; implied multi-hop questions answered yes/no at random). The tool (sparse boolean matrix powers)
and the baseline (the straightforward per-source depth-first path walk and a scan of every link for
every entity, as in the SpARC scripts) compute the same numbers, which are checked to agree. Target:
the tool <= 1 s; ``ratio:`` = tool time / baseline time.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import header  # noqa: E402

from guidetune.beliefbank.data import BeliefBank  # noqa: E402
from guidetune.evaluation.consistency import (canonical_constraints, constraint_consistency,  # noqa: E402
                                              multihop_consistency, pairs_to_ask)


def synthetic_predictions(bank: BeliefBank, path: Path, k: int) -> None:
    rng = random.Random(0)
    rows = []
    edges = {}
    for q in bank.edge_questions():
        a = q.answer if rng.random() > 0.15 else not q.answer
        edges[(q.source, q.target)] = a
        rows.append({"kind": "edge", "subject": q.subject, "target": q.target, "pred": a})
    for s, z in pairs_to_ask(edges, k):
        rows.append({"kind": "multihop", "subject": s.split(",", 1)[1], "target": z, "pred": rng.random() < 0.5})
    for e, facts in bank.facts.items():
        for node, gold in facts.items():
            rows.append({"kind": "constraint", "subject": e, "target": node, "pred": gold if rng.random() > 0.15 else not gold})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read(path: Path):
    edges, pairs, beliefs = {}, {}, defaultdict(dict)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = (f"IsA,{r['subject']}", r["target"])
        if r["kind"] == "edge":
            edges[key] = r["pred"]
        elif r["kind"] == "multihop":
            pairs[key] = r["pred"]
        elif r["kind"] == "constraint":
            beliefs[r["subject"]][r["target"]] = r["pred"]
    return edges, pairs, beliefs


def baseline(edges, pairs, beliefs, links, k):
    """Per-source depth-first walk over believed-yes edges (paths up to k), then a scan of every clause."""
    out = defaultdict(list)
    for (s, t), a in edges.items():
        out[s].append((t, a))
    answers = {**pairs, **edges}
    checks = ok = 0
    for src in list(out):
        seen = set()

        def walk(node, depth):
            nonlocal checks, ok
            for t, a in out.get(node, ()):
                if depth >= 2 and t != src and (src, t, a) not in seen:
                    seen.add((src, t, a))
                    if (src, t) in answers:
                        checks += 1
                        ok += answers[(src, t)] == a
                if a and depth < k and (t, depth + 1) not in visited:
                    visited.add((t, depth + 1))
                    walk(t, depth + 1)

        visited = set()
        walk(src, 1)
    clauses = canonical_constraints(links)
    applicable = violated = 0
    for bel in beliefs.values():
        for a, b, w in clauses:
            if bel.get(a) and b in bel:
                applicable += 1
                violated += (not bel[b]) if w == "yes_yes" else bel[b]
    return ok / checks, 1 - violated / applicable


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beliefbank", default=str(Path(__file__).resolve().parents[2] / "shared/data/beliefbank"))
    ap.add_argument("--predictions", default=None)
    ap.add_argument("--k", type=int, default=9)
    a = ap.parse_args()
    header("consistency speed: multi-hop + constraint consistency on the full BeliefBank graph")
    bank = BeliefBank.load(a.beliefbank)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(a.predictions) if a.predictions else Path(tmp) / "predictions.jsonl"
        if not a.predictions:
            synthetic_predictions(bank, path, a.k)
        t0 = time.perf_counter()
        edges, pairs, beliefs = read(path)
        mh = multihop_consistency(edges, pairs, a.k)
        cc = constraint_consistency(beliefs, bank.links)
        tool = time.perf_counter() - t0
        t0 = time.perf_counter()
        edges, pairs, beliefs = read(path)
        b_mh, b_cc = baseline(edges, pairs, beliefs, bank.links, a.k)
        base = time.perf_counter() - t0
    print(f"edges {len(edges)}, multi-hop questions {len(pairs)}, entities {len(beliefs)}, k = {a.k}")
    print(f"tool:     {tool:.3f} s  multi-hop {mh['consistency']:.4f} ({mh['checks']} checks), "
          f"constraint {cc['consistency']:.4f} ({cc['applicable']} applicable)")
    print(f"baseline: {base:.3f} s  multi-hop {b_mh:.4f}, constraint {b_cc:.4f}")
    assert abs(b_mh - mh["consistency"]) < 1e-9 and abs(b_cc - cc["consistency"]) < 1e-9, "tool and baseline disagree"
    print(f"target: tool <= 1 s: {'met' if tool <= 1 else 'MISSED'}")
    print(f"ratio: {tool / base:.3f}")


if __name__ == "__main__":
    main()
