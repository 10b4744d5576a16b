"""Logical consistency of a model's yes/no beliefs (SpARC section 5.2; BeliefBank's constraint violations).

**Multi-hop consistency.** The model answers the edge questions (s -> t) of the constraint graph; its
*belief graph* has an edge s -> t for every question answered yes. For every node pair (s, z) joined by
a path s -> m_1 -> ... -> m -> z of length 2..k whose edges up to m are believed-yes, the single-hop
question (s, z) should get the answer the model gave to the last edge (m, z). Consistency is the
fraction of such (s, z, expected) checks the model's answer to (s, z) satisfies. If different paths
imply different answers for one pair, each implied answer is its own check (one must fail).

Computed with sparse boolean matrix products: with Y and N the believed-yes / believed-no edge
matrices, R = Y + Y^2 + ... + Y^(k-1) holds the pairs joined by a believed-yes path of length 1..k-1,
and R Y, R N hold the pairs whose k-bounded paths end in a yes / no edge. Cycles need no special care.

**Constraint consistency** (Kassner et al. 2021): 1 - tau, tau = the fraction of *applicable*
constraints the model's beliefs about an entity violate, pooled over entities. A constraint a => b
(yes_yes) or a => not b (yes_no) is applicable to an entity when the model believes a about it and has
a belief about b; yes_yes is violated by denying b, yes_no by believing b. A ``back`` link
(source s, target t) states the contrapositive not s => not t, i.e. t => s, and is counted once with
its forward twin.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

Pair = tuple[str, str]


class _Index:
    def __init__(self, nodes: Iterable[str]):
        self.names = sorted(set(nodes))
        self.id = {n: i for i, n in enumerate(self.names)}

    def matrix(self, pairs: Iterable[Pair]) -> sp.csr_matrix:
        pairs = list(pairs)
        n = len(self.names)
        if not pairs:
            return sp.csr_matrix((n, n), dtype=np.int32)
        rows = [self.id[s] for s, _ in pairs]
        cols = [self.id[t] for _, t in pairs]
        m = sp.csr_matrix((np.ones(len(pairs), dtype=np.int32), (rows, cols)), shape=(n, n))
        m.data[:] = 1  # duplicates collapse to one
        return m


def _bool(m: sp.csr_matrix) -> sp.csr_matrix:
    m = m.tocsr()
    m.data = (m.data > 0).astype(np.int32)
    m.eliminate_zeros()
    return m


def implied(edge_answers: dict[Pair, bool], k: int = 9) -> tuple[_Index, sp.csr_matrix, sp.csr_matrix]:
    """(index, implied-yes, implied-no) pair matrices from the model's edge answers, paths of length 2..k."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    idx = _Index([n for pair in edge_answers for n in pair])
    yes = idx.matrix(p for p, a in edge_answers.items() if a)
    no = idx.matrix(p for p, a in edge_answers.items() if not a)
    reach, frontier = yes.copy(), yes.copy()
    for _ in range(k - 2):  # paths of length 2..k-1 of believed-yes edges
        frontier = _bool(frontier @ yes)
        new = _bool(reach + frontier)
        if new.nnz == reach.nnz:  # the union only grows; unchanged means closed under further steps
            break
        reach = new
    return idx, _off_diagonal(_bool(reach @ yes)), _off_diagonal(_bool(reach @ no))


def _off_diagonal(m: sp.csr_matrix) -> sp.csr_matrix:
    """Drop (s, s): "is a dog a dog" is not a question."""
    m = m.tolil()
    m.setdiag(0)
    m = m.tocsr()
    m.eliminate_zeros()
    return m


def pairs_to_ask(edge_answers: dict[Pair, bool], k: int = 9) -> list[Pair]:
    """The (s, z) questions the multi-hop metric needs, sorted, without the edges already answered."""
    idx, iy, in_ = implied(edge_answers, k)
    both = _bool(iy + in_).tocoo()
    out = {(idx.names[r], idx.names[c]) for r, c in zip(both.row, both.col)}
    return sorted(out - set(edge_answers))


def _answer_matrices(edge_answers: dict[Pair, bool], pair_answers: dict[Pair, bool], k: int):
    """(implied yes, implied no, answered yes, answered no, answered) over the graph's nodes."""
    idx, iy, in_ = implied(edge_answers, k)
    answers = {**pair_answers, **edge_answers}  # edge answers win for pairs that are also edges
    known = {p: a for p, a in answers.items() if p[0] in idx.id and p[1] in idx.id}
    ay = idx.matrix(p for p, a in known.items() if a)
    an = idx.matrix(p for p, a in known.items() if not a)
    return iy, in_, ay, an, _bool(ay + an)


def multihop_checks(edge_answers: dict[Pair, bool], pair_answers: dict[Pair, bool], k: int = 9) -> np.ndarray:
    """One bool per check of :func:`multihop_consistency` (True = satisfied; implied-yes checks first),
    so that the ratio's interval can be had by resampling checks; ``mean()`` is the consistency."""
    iy, in_, ay, an, answered = _answer_matrices(edge_answers, pair_answers, k)
    out = []
    for implied_m, said in ((iy, ay), (in_, an)):
        c = implied_m.multiply(answered).tocoo()
        vals = said[c.row, c.col] if c.nnz else np.zeros(0)  # scipy returns a sparse 1x0 for no indices
        out.append(np.asarray(vals.todense() if sp.issparse(vals) else vals).ravel() > 0)
    return np.concatenate(out)


def multihop_consistency(edge_answers: dict[Pair, bool], pair_answers: dict[Pair, bool], k: int = 9) -> dict:
    """Consistency of the answers to implied (s, z) questions with the belief graph of ``edge_answers``.

    ``pair_answers`` holds the model's answers to the questions of :func:`pairs_to_ask` (edge answers
    are used for pairs that are also edges). Returns consistency, checks, violations, and unanswered
    (implied pairs with no answer given; they are left out of the fraction).
    """
    iy, in_, ay, an, answered = _answer_matrices(edge_answers, pair_answers, k)
    checks = iy.multiply(answered).nnz + in_.multiply(answered).nnz
    ok = iy.multiply(ay).nnz + in_.multiply(an).nnz
    return {
        "consistency": ok / checks if checks else float("nan"),
        "checks": int(checks),
        "violations": int(checks - ok),
        "unanswered": int(iy.nnz + in_.nnz - checks),
    }


def canonical_constraints(links) -> set[tuple[str, str, str]]:
    """(antecedent, consequent, weight) clauses; back links turned into their forward form and merged."""
    out = set()
    for ln in links:
        a, b = (ln.source, ln.target) if ln.direction == "forward" else (ln.target, ln.source)
        out.add((a, b, ln.weight))
    return out


def constraint_consistency(beliefs: dict[str, dict[str, bool]], links) -> dict:
    """1 - tau over every entity's beliefs {entity: {node: believed}} (see the module docstring)."""
    clauses = canonical_constraints(links)
    by_antecedent: dict[str, list[tuple[str, str]]] = {}
    for a, b, w in clauses:
        by_antecedent.setdefault(a, []).append((b, w))
    applicable = violated = 0
    for bel in beliefs.values():
        for a, held in bel.items():
            if not held:
                continue
            for b, w in by_antecedent.get(a, ()):
                if b in bel:
                    applicable += 1
                    violated += (not bel[b]) if w == "yes_yes" else bel[b]
    return {
        "consistency": 1 - violated / applicable if applicable else float("nan"),
        "applicable": applicable,
        "violations": int(violated),
    }
