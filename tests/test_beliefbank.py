import json
import shutil

import pytest
import torch

from conftest import BELIEFBANK, tiny_config
from guidetune.beliefbank.data import BeliefBank, phrase, split_facts
from guidetune.beliefbank.pairs import PairSampler, adjacent_pairs, linked_pairs
from guidetune.config import PluginSpec, build_plugin, load_config
from guidetune.errors import GuidetuneError
from guidetune.tasks import TASKS

needs_release = pytest.mark.skipif(not BELIEFBANK.is_dir(), reason="BeliefBank release not at ../shared")


@needs_release
def test_release_loads_with_the_documented_counts():
    bank = BeliefBank.load(BELIEFBANK)
    assert len(bank.facts) == 85 and sum(map(len, bank.facts.values())) == 12636
    assert len(bank.nodes) == 1846 and len(bank.links) == 4060 and len(bank.calibration) == 7
    train, val, test = split_facts(bank.facts, seed=0)
    assert sum(map(len, train.values())) == 10083  # the SpARC paper's training count
    assert sum(map(len, train.values())) + sum(map(len, val.values())) + sum(map(len, test.values())) == 12636
    assert split_facts(bank.facts, seed=0) == (train, val, test)  # stable
    edges = bank.edge_questions()
    assert len(edges) == 2224 and sum(q.answer for q in edges) == 1836


def test_grammatical_phrasing():
    nc = {"water", "leaves"}
    assert phrase("tree", "HasPart,leaves", nc).text == "Does a tree have leaves?"
    assert phrase("bird", "CapableOf,fly", nc).text == "Can a bird fly?"
    assert phrase("eagle", "IsA,bird", nc).text == "Is an eagle a bird?"
    assert phrase("lake", "MadeOf,water", nc).text == "Is a lake made of water?"
    assert phrase("water", "HasProperty,wet", nc).text == "Is water wet?"
    assert phrase("unicorn", "IsA,animal", nc).text == "Is a unicorn an animal?"
    assert phrase("dog", "HasA,scales", nc).text == "Does a dog have scales?"


def test_negated_phrasing_flips_the_answer_and_marks_negation_words():
    q = phrase("bison", "IsA,reptile", set(), negated=True, answer=False)
    assert q.text == "Is it true that a bison is not a reptile?" and q.answer is True and q.belief is False
    assert [q.text[a:b] for a, b in q.negation_spans] == ["not"]
    assert q.text[slice(*q.subject_span)] == "bison" and q.text[slice(*q.object_span)] == "reptile"
    c = phrase("fish", "CapableOf,walk", set(), negated=True, answer=False)
    assert c.text == "Is it true that a fish cannot walk?" and [c.text[a:b] for a, b in c.negation_spans] == ["cannot"]


def _copy_bank(tmp_path):
    d = tmp_path / "bank"
    src = BeliefBank.load("guidetune:minibank").directory
    shutil.copytree(src, d)
    return d


def test_missing_release_file_names_it_and_the_directory(tmp_path):
    d = _copy_bank(tmp_path)
    (d / "constraints_v2.json").unlink()
    with pytest.raises(GuidetuneError, match=f"BeliefBank file 'constraints_v2.json' is missing from '{d}'"):
        BeliefBank.load(d)


def test_malformed_json_gives_file_and_position(tmp_path):
    d = _copy_bank(tmp_path)
    (d / "silver_facts.json").write_text('{"dog": {"IsA,mammal": "yes",, }}')
    with pytest.raises(GuidetuneError, match=r"silver_facts.json: malformed JSON at line 1, column 30 \(char 29\)"):
        BeliefBank.load(d)


def test_unknown_relation_and_weight_name_value_and_allowed(tmp_path):
    d = _copy_bank(tmp_path)
    g = json.loads((d / "constraints_v2.json").read_text())
    g["links"][3]["weight"] = "maybe"
    (d / "constraints_v2.json").write_text(json.dumps(g))
    with pytest.raises(GuidetuneError, match=r"links\[3\]: unknown weight 'maybe'; allowed: yes_yes, yes_no"):
        BeliefBank.load(d)
    g["links"][3]["weight"] = "yes_yes"
    g["nodes"].append({"id": "LivesIn,sea"})
    (d / "constraints_v2.json").write_text(json.dumps(g))
    with pytest.raises(GuidetuneError, match=r"unknown relation 'LivesIn' in 'LivesIn,sea'; allowed: IsA, HasA"):
        BeliefBank.load(d)


def _task(tok, **params):
    t = build_plugin(TASKS, PluginSpec("beliefbank", params))
    t.setup(tok)
    return t


def test_token_indices_for_answer_and_entity(tok):
    t = _task(tok)
    q = phrase("german shepherd", "IsA,dog", set())
    f = t.features([q, q], roles=["subject", "object"])
    toks = tok.convert_ids_to_tokens(f[0]["input_ids"])
    assert toks[f[0]["gt_answer_index"]] == "?"
    assert toks[f[0]["gt_entity_index"]] == "shepherd"
    assert toks[f[1]["gt_entity_index"]] == "dog"
    assert f[0]["labels"] == 1


def test_pairs_and_whole_pair_batches(tok):
    bank = BeliefBank.load("guidetune:minibank")
    qs = bank.fact_questions()
    for p in linked_pairs(qs, 0, 50):
        a, b = qs[p[0]], qs[p[1]]
        assert a.target == f"IsA,{b.subject}" and a.belief  # X -> Y (believed), Y -> Z
    for p in adjacent_pairs(qs, 0, 0):
        assert qs[p[0]].subject == qs[p[1]].subject and p[0] != p[1]
    sampler = PairSampler(10, seed=3)
    sampler.set_epoch(1)
    order = list(sampler)
    assert sorted(order) == list(range(20)) and order == list(sampler)
    for k in range(0, 20, 4):  # batch size 4 -> two whole pairs per batch
        assert {order[k] // 2, order[k + 1] // 2} == {order[k] // 2} and order[k + 2] // 2 == order[k + 3] // 2
    sampler.set_epoch(2)
    assert list(sampler) != order


def test_odd_batch_with_pairs_is_refused(tmp_path, tiny_dirs):
    from guidetune.experiment import run_training

    cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], {"train": "x", "eval": "x"},
                                  task={"name": "beliefbank", "pairs": "adjacent", "limit_train": 40},
                                  train={"batch_size": 5}))
    with pytest.raises(GuidetuneError, match=r"train.batch_size: must be even when task.pairs is set.*got 5"):
        run_training(cfg)


def test_no_linked_pairs_is_a_clear_error(tok):
    t = _task(tok, pairs="linked", limit_train=3)
    with pytest.raises(GuidetuneError, match="the 'linked' method found no positive pair among 3 training questions"):
        t.dataset("train")


def test_answers_are_deduplicated(tok, make_model):
    t = _task(tok)
    model = make_model("bert")
    calls = []
    model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape[0]), with_kwargs=True)
    q = phrase("dog", "IsA,mammal", set())
    assert len(t.answer(model, [q, q, q, phrase("cat", "IsA,mammal", set())], batch_size=64)) == 4
    assert calls == [2]


@pytest.mark.parametrize("kind,fmt,head", [("bert", "classification", "classification"),
                                           ("t5", "seq2seq", "seq2seq_lm"), ("gpt2", "causal", "causal_lm")])
def test_train_and_evaluate_every_format_end_to_end(tmp_path, tiny_dirs, kind, fmt, head):
    from guidetune.experiment import run_training

    cfg = load_config(tiny_config(
        tmp_path, tiny_dirs[kind], {"train": "x", "eval": "x"}, name=f"bb-{kind}",
        model={"name": str(tiny_dirs[kind]), "head": head},
        task={"name": "beliefbank", "format": fmt, "limit_train": 64, "pairs": "adjacent", "max_length": 40},
        train={"max_steps": 3, "batch_size": 8},
        regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final" if kind != "gpt2" else "final"],
                       "tokens": "entity"},
                      {"name": "contrastive", "weight": 0.1, "similarity": "answer"}]))
    res = run_training(cfg)
    m = res["metrics"]
    for key in ("f1", "accuracy", "edge_f1", "multihop_consistency", "constraint_consistency"):
        assert key in m
    for key in ("constraint_consistency", "multihop_consistency"):  # null when nothing was applicable
        assert m[key] is None or 0 <= m[key] <= 1
    assert m["n"] > 0 and m["edge_n"] > 0
    assert res["data"]["pairs"]["method"] == "adjacent" and res["data"]["pairs"]["pairs"] > 0
    preds = (tmp_path / "runs" / f"bb-{kind}" / "predictions.jsonl").read_text().splitlines()
    kinds = {json.loads(line)["kind"] for line in preds}
    assert {"fact", "edge", "constraint"} <= kinds
    logs = (tmp_path / "runs" / f"bb-{kind}" / "metrics.jsonl").read_text()
    assert "loss/contrastive" in logs and "loss/l1" in logs
