"""Consistency metrics against values worked out by hand on small graphs."""
import pytest

from guidetune.beliefbank.data import Link
from guidetune.evaluation.consistency import constraint_consistency, multihop_consistency, pairs_to_ask

# A -> B -> C -> A is a cycle of believed-yes edges; C -> D is answered no; B -> E, D -> E yes.
EDGES = {("A", "B"): True, ("B", "C"): True, ("C", "A"): True, ("C", "D"): False, ("B", "E"): True,
         ("D", "E"): True}


def test_implied_pairs_with_a_cycle_and_a_no_edge():
    # k = 3: yes-paths of length 1..2 from each node, then one more edge.
    # implied yes: (A,C) A-B-C, (A,E) A-B-E, (B,A) B-C-A, (C,B) C-A-B, (C,E) C-A-B-E
    # implied no:  (B,D) B-C-D, (A,D) A-B-C-D;   (A,A), (B,B), (C,C) are dropped
    assert pairs_to_ask(EDGES, k=3) == sorted([("A", "C"), ("A", "E"), ("B", "A"), ("C", "B"), ("C", "E"),
                                               ("B", "D"), ("A", "D")])
    # k = 2 keeps paths of exactly two edges: (A,D) and (C,E) need three
    assert pairs_to_ask(EDGES, k=2) == sorted([("A", "C"), ("A", "E"), ("B", "A"), ("C", "B"), ("B", "D")])


def test_multihop_consistency_by_hand():
    answers = {("A", "C"): True, ("A", "E"): False, ("B", "A"): True, ("C", "B"): True, ("C", "E"): True,
               ("B", "D"): False, ("A", "D"): True}
    got = multihop_consistency(EDGES, answers, k=3)
    # violated: (A,E) expected yes, said no; (A,D) expected no, said yes -> 5 of 7
    assert got == {"consistency": pytest.approx(5 / 7), "checks": 7, "violations": 2, "unanswered": 0}
    got2 = multihop_consistency(EDGES, answers, k=2)
    assert got2["checks"] == 5 and got2["violations"] == 1


def test_conflicting_paths_count_twice_and_unanswered_pairs_are_reported():
    edges = {("A", "B"): True, ("B", "F"): True, ("B", "E"): True, ("E", "F"): False}
    # implied: (A,F) yes by A-B-F and no by A-B-E-F (two checks, exactly one can hold); (A,E) yes by
    # A-B-E; (B,F) no by B-E-F, while the edge B->F itself was answered yes.
    got = multihop_consistency(edges, {("A", "F"): True, ("A", "E"): True}, k=3)
    assert (got["checks"], got["violations"]) == (4, 2)
    assert multihop_consistency(edges, {}, k=3)["unanswered"] == 3  # only (B,F) is answered (by its edge)


def test_a_pair_that_is_also_an_edge_uses_the_edge_answer():
    edges = {("A", "B"): True, ("B", "C"): True, ("A", "C"): False}
    assert pairs_to_ask(edges, k=2) == []
    assert multihop_consistency(edges, {}, k=2) == {"consistency": 0.0, "checks": 1, "violations": 1,
                                                    "unanswered": 0}


def test_constraint_consistency_by_hand():
    links = [
        Link("a", "b", "yes_yes", "forward"),   # applicable (a believed), violated (b denied)
        Link("a", "c", "yes_yes", "forward"),   # applicable, holds
        Link("c", "d", "yes_no", "forward"),    # applicable (c believed), violated (d believed)
        Link("b", "c", "yes_yes", "forward"),   # not applicable: b is not believed
        Link("c", "a", "yes_yes", "back"),      # contrapositive of a => c: the same clause, counted once
        Link("d", "a", "yes_yes", "back"),      # not d => not a, i.e. a => d: applicable, holds
        Link("a", "z", "yes_yes", "forward"),   # no belief about z: not applicable
    ]
    beliefs = {"e1": {"a": True, "b": False, "c": True, "d": True}, "e2": {"a": False, "b": True, "c": True}}
    # e1: 4 applicable, 2 violated.  e2: b => c applicable and holds (1); c => d: d unknown.
    got = constraint_consistency(beliefs, links)
    assert got == {"consistency": pytest.approx(1 - 2 / 5), "applicable": 5, "violations": 2}
