import math

import pytest
import torch

from guidetune.config import PluginSpec, build_plugin
from guidetune.errors import ConfigError, GuidetuneError
from guidetune.layers.capture import Capture
from guidetune.layers.names import LayerScheme
from guidetune.regularizers import REGULARIZERS
from guidetune.testing import tiny_model


def _batch(tok):
    enc = dict(tok(["the cat sat on the mat", "no", "a dog barked twice"], return_tensors="pt", padding=True))
    return enc


def _rich_batch(tok):
    """Everything a task can mark: token indices and positive pairs (the contract tests use it)."""
    enc = dict(tok(["is a cat a mammal ?", "can a cat not purr ?", "is a fish not a mammal ?", "can a fish swim ?"],
                   return_tensors="pt", padding=True))
    enc.update(gt_eos_index=enc["attention_mask"].sum(1) - 1, gt_answer_index=enc["attention_mask"].sum(1) - 2,
               gt_entity_index=torch.tensor([3, 3, 3, 3]), gt_pair_id=torch.tensor([0, 0, 1, 1]))
    return enc


def _run(model, reg, batch):
    from guidetune.testing import tokenizer

    reg.setup(model, tokenizer())
    with Capture(model, reg.captured) as cap:
        model(**{k: v for k, v in batch.items() if not k.startswith("gt_")})
    return reg.loss(cap, batch), cap


def test_l1_equals_the_brute_force_formula(tok):
    model = tiny_model("bert", head="encoder")
    batch = _batch(tok)
    for normalize in ("l2", "none"):
        reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": ["encoder.layers.0.out", "encoder.final"],
                                                           "normalize": normalize, "reduction": "sum"}))
        loss, cap = _run(model, reg, batch)
        expected, n = 0.0, 0
        for name in reg.captured:
            acts = cap[name]
            for b in range(acts.shape[0]):
                for t in range(acts.shape[1]):
                    if batch["attention_mask"][b, t]:
                        v = acts[b, t].double()
                        if normalize == "l2":
                            v = v / v.norm()
                        expected += float(v.detach().abs().sum())
                        n += 1
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        reg.reduction = "mean"
        assert float(reg.loss(cap, batch)) == pytest.approx(expected / (n / 2), rel=1e-5)  # n counted per layer


def test_hoyer_equals_the_brute_force_formula(tok):
    model = tiny_model("bert", head="encoder")
    batch = _batch(tok)
    reg = build_plugin(REGULARIZERS, PluginSpec("hoyer", {"layers": ["encoder.layers.1.ffn.act"]}))
    loss, cap = _run(model, reg, batch)
    acts, vals = cap["encoder.layers.1.ffn.act"], []
    for b in range(acts.shape[0]):
        for t in range(acts.shape[1]):
            if batch["attention_mask"][b, t]:
                v = acts[b, t].double()
                vals.append(float(v.detach().abs().sum() ** 2 / (v.detach() ** 2).sum()))
    assert float(loss) == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    assert 1.0 <= min(vals) and max(vals) <= 64


def test_padding_tokens_do_not_count(tok):
    model = tiny_model("bert", head="encoder")
    batch = _batch(tok)
    reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": ["encoder.final"], "reduction": "sum"}))
    loss, cap = _run(model, reg, batch)
    acts = cap["encoder.layers.1.out"].detach().clone()
    acts[~batch["attention_mask"].bool()] = 1000.0  # garbage in padded positions
    cap._acts["encoder.layers.1.out"] = acts
    assert float(reg.loss(cap, batch)) == pytest.approx(float(loss), rel=1e-6)


@pytest.mark.parametrize("tokens,index", [("last", None), ("eos", "gt_eos_index")])
def test_token_selection_picks_one_token_per_example(tok, tokens, index):
    model = tiny_model("bert", head="encoder")
    batch = _batch(tok)
    reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": ["encoder.final"], "tokens": tokens,
                                                       "normalize": "none", "reduction": "sum"}))
    if index:
        batch[index] = torch.tensor([1, 0, 2])
    loss, cap = _run(model, reg, batch)
    acts = cap["encoder.layers.1.out"]
    pos = [1, 0, 2] if index else [int(m.nonzero().max()) for m in batch["attention_mask"]]
    expected = sum(float(acts[b, p].detach().abs().sum()) for b, p in enumerate(pos))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_answer_tokens_need_a_task_that_marks_them(tok):
    model = tiny_model("bert", head="encoder")
    reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"tokens": "answer"}))
    with pytest.raises(GuidetuneError, match="needs a task that marks answer tokens"):
        _run(model, reg, _batch(tok))


def test_bad_parameters_are_reported_together():
    with pytest.raises(ConfigError) as e:
        build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": [], "tokens": "every", "bogus": 1}))
    msgs = e.value.messages
    assert any("tokens: got 'every', allowed: all, last, eos, answer, entity" in m for m in msgs)
    assert any("bogus: unknown field" in m for m in msgs)


# ---- contract tests: every registered regularizer ------------------------------------------------

def _blocks_with_grad(model) -> set[int]:
    out = set()
    for i, block in enumerate(model.bert.encoder.layer):
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters()):
            out.add(i)
    return out


LOSS_TERMS = [n for n in REGULARIZERS.names() if not getattr(REGULARIZERS.get(n), "schedule_kind", False)]
SCHEDULES = [n for n in REGULARIZERS.names() if getattr(REGULARIZERS.get(n), "schedule_kind", False)]


@pytest.mark.parametrize("name", LOSS_TERMS)
def test_contract_defaults_give_a_finite_loss(name, tok):
    model = tiny_model("bert", head="classification", num_hidden_layers=3)
    reg = build_plugin(REGULARIZERS, PluginSpec(name, {}))
    loss, _ = _run(model, reg, _rich_batch(tok))
    value = loss[0] if isinstance(loss, tuple) else loss
    assert value.ndim == 0 and math.isfinite(float(value))


@pytest.mark.parametrize("name", LOSS_TERMS)
def test_contract_gradient_reaches_exactly_the_named_layers(name, tok):
    model = tiny_model("bert", head="classification", num_hidden_layers=3)
    reg = build_plugin(REGULARIZERS, PluginSpec(name, {"layers": ["encoder.layers.1"]}))
    reg.setup(model, tok)
    assert {LayerScheme.from_model(model).parse(n)[1] for n in reg.captured} == {1}
    loss, _ = _run(model, reg, _rich_batch(tok))
    value = loss[0] if isinstance(loss, tuple) else loss
    value.backward()
    assert _blocks_with_grad(model) == {0, 1}  # layer 2 and the head are after the named layer
    assert model.classifier.weight.grad is None
    assert all(p.grad is None for p in model.bert.pooler.parameters())


@pytest.fixture(scope="module")
def tiny_fisher(tmp_path_factory, tok):
    """A real Fisher file of the contract model (tiny BERT, 3 layers, seed 0)."""
    from guidetune.analysis.fisher_estimate import estimate, save

    model = tiny_model("bert", head="classification", num_hidden_layers=3)
    samples = [dict(tok(t), labels=i % 2) for i, t in enumerate(["a cat", "the dog ran", "no", "birds sing"])]
    fisher = estimate(model, tok, samples, "task", batch_size=2, progress=False)[4]
    return save(tmp_path_factory.mktemp("f") / "f.safetensors", model, fisher, {"model": "tiny", "objective": "task",
                                                                                  "n": 4, "seed": 0})


@pytest.mark.parametrize("name", SCHEDULES)
def test_contract_schedules_change_dropout_and_add_no_work(name, tok, tiny_fisher):
    model = tiny_model("bert", head="classification", num_hidden_layers=3)
    params = {"fisher": str(tiny_fisher)} if name == "fisher_dropout" else {}
    reg = build_plugin(REGULARIZERS, PluginSpec(name, params))
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    reg.setup(model, tok)
    assert reg.captured == [] and reg.loss(None, {}) is None
    assert len(reg.schedule) == 1 + 3 * 3 + 1  # embeddings, 3 per layer, classifier dropout
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
