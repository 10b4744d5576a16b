import copy
import json

import numpy as np
import pytest
import torch

from guidetune.analysis.fisher_estimate import estimate, load, per_sample_nll, reliability, save
from guidetune.cli import main
from guidetune.config import FinetuneSpec, PluginSpec, build_plugin
from guidetune.errors import ConfigError, GuidetuneError
from guidetune.finetune.modes import apply_mode
from guidetune.regularizers import REGULARIZERS
from guidetune.regularizers.fisher_dropout import dropout_scores, linear_schedule
from guidetune.tasks.base import pad_batch
from guidetune.testing import tiny_model

TEXTS = ["the cat sat on the mat", "a dog", "never say never again please", "birds fly south",
         "one two three four five six seven"]


def _samples(tok, objective, strip_types):
    out = []
    for i, t in enumerate(TEXTS):
        e = dict(tok(t))
        if strip_types:
            e.pop("token_type_ids")
        if objective != "clm":  # clm targets are the input ids themselves
            e["labels"] = {"task": i % 2, "seq2seq": tok("a short target")["input_ids"]}[objective]
        out.append(e)
    return out


def _reference(model, tok, samples, objective):
    """The straightforward way on a float64 copy of the model: one sample at a time, autograd.grad, square,
    accumulate (a float32 loop is the noisy side on some CPUs)."""
    ref = copy.deepcopy(model).double().eval()
    params = dict(ref.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in samples:
        nll = per_sample_nll(ref, pad_batch(tok, [s]), objective)
        for (n, _), g in zip(params.items(), torch.autograd.grad(nll.sum(), list(params.values()), allow_unused=True)):
            if g is not None:
                total[n] += g ** 2
    return {n: t / len(samples) for n, t in total.items()}


@pytest.mark.parametrize("kind,head,objective", [("bert", "classification", "task"), ("gpt2", "causal_lm", "clm"),
                                                 ("llama", "causal_lm", "clm"), ("t5", "seq2seq_lm", "seq2seq")])
def test_batched_per_sample_fisher_equals_the_one_sample_loop(tok, kind, head, objective):
    model = tiny_model(kind, head)
    samples = _samples(tok, objective, kind != "bert")
    got = estimate(model, tok, samples, objective, batch_size=3, progress=False)[5]
    ref = _reference(model, tok, samples, objective)
    assert set(got) == set(ref)  # tied GPT-2/T5 embeddings appear once
    # Relative error of the float32 estimate against the float64 truth, with values below 1e-4 of the
    # largest compared at that floor: there float32 rounding of the backward itself dominates (exactly-zero
    # gradients such as attention key biases' come out as noise). Every family, and the float64 estimate
    # at a 1e-12 floor: tests/test_fisher_families.py.
    floor = 1e-4 * max(float(v.max()) for v in ref.values())
    for n in ref:
        err = ((got[n].double() - ref[n]).abs() / ref[n].abs().clamp_min(floor)).max()
        assert err < 1e-4, (n, float(err))


def test_snapshots_are_prefix_estimates(tok):
    model = tiny_model("bert", "classification")
    samples = _samples(tok, "task", False)
    both = estimate(model, tok, samples, "task", batch_size=2, snapshots=[3, 5], progress=False)
    only3 = estimate(model, tok, samples[:3], "task", batch_size=2, progress=False)[3]
    for n in only3:
        torch.testing.assert_close(both[3][n], only3[n])


@pytest.fixture
def fisher_file(tmp_path, tok):
    model = tiny_model("bert", "classification")
    f = estimate(model, tok, _samples(tok, "task", False), "task", batch_size=5, progress=False)[5]
    return save(tmp_path / "f.safetensors", model, f, {"model": "tiny", "objective": "task", "n": 5, "seed": 0}), model


def test_saved_file_has_aggregates_and_rejects_other_models(fisher_file):
    path, model = fisher_file
    fisher, meta = load(path, model)
    assert meta["objective"] == "task" and meta["n"] == "5"
    side = json.loads(path.with_suffix(".json").read_text())
    assert {"encoder.layers.0", "encoder.layers.1", "embeddings"} <= set(side["per_layer"])
    assert "bert.encoder.layer.1.output.dropout" in side["per_dropout"]
    other = tiny_model("bert", "classification", intermediate_size=48)
    with pytest.raises(GuidetuneError, match=r"was computed for a different model: 6 differ in shape \(e.g. "
                                             r"bert.encoder.layer.0.intermediate.dense.weight: \[64, 32\] in the file, "
                                             r"\[48, 32\] in the model\)"):
        load(path, other)


def test_fisher_dropout_ranks_sites_linearly(fisher_file, tok):
    path, _ = fisher_file
    model = tiny_model("bert", "classification")
    reg = build_plugin(REGULARIZERS, PluginSpec("fisher_dropout", {"fisher": str(path), "p_min": 0.0, "p_max": 0.09}))
    reg.setup(model, tok)
    fisher, _ = load(path)
    scores = dropout_scores(model, fisher)
    ranked = sorted(scores, key=lambda k: -scores[k])
    assert reg.schedule[ranked[0]] == 0.0 and reg.schedule[ranked[-1]] == pytest.approx(0.09)
    steps = sorted(reg.schedule.values())
    assert np.allclose(np.diff(steps), 0.09 / (len(steps) - 1))  # equal steps
    att = model.bert.encoder.layer[0].attention.self
    assert att.dropout.p == reg.schedule["bert.encoder.layer.0.attention.self.dropout"]
    assert att.dropout_prob == att.dropout.p  # the SDPA path reads this float
    assert linear_schedule({"a": 3.0, "b": 1.0, "c": 2.0}, 0.0, 0.2) == {"a": 0.0, "c": 0.1, "b": 0.2}


def test_fisher_dropout_in_lora_mode_sets_per_layer_lora_dropout(fisher_file, tok):
    path, _ = fisher_file
    model = apply_mode(tiny_model("bert", "classification"), FinetuneSpec(mode="lora", lora_r=2), "classification")
    reg = build_plugin(REGULARIZERS, PluginSpec("fisher_dropout", {"fisher": str(path), "p_max": 0.2}))
    reg.setup(model, tok)
    lora = {k: v for k, v in reg.schedule.items() if "lora_dropout" in k}
    assert len(lora) == 4 and len(set(lora.values())) > 1  # query/value of 2 layers, each its own p


@pytest.mark.parametrize("params,message", [
    ({"fisher": "f", "p_min": 0.3, "p_max": 0.1}, "p_min: must be <= p_max, got p_min=0.3 > p_max=0.1"),
    ({"fisher": "f", "p_max": 1.0}, r"p_max: must be in \[0, 1\), got 1.0"),
    ({"fisher": "f", "p_min": -0.1}, r"p_min: must be in \[0, 1\), got -0.1"),
])
def test_bad_dropout_probabilities(params, message):
    with pytest.raises(ConfigError, match=message):
        build_plugin(REGULARIZERS, PluginSpec("fisher_dropout", params))


def test_gaussian_dropout_replaces_modules(tok):
    from guidetune.regularizers.fisher_dropout import GaussianDropout

    model = tiny_model("bert", "classification")
    build_plugin(REGULARIZERS, PluginSpec("gaussian_dropout", {"p": 0.2})).setup(model, tok)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    noise = model.bert.encoder.layer[0].output.dropout
    assert isinstance(noise, GaussianDropout)
    torch.manual_seed(0)
    x = torch.ones(20000)
    y = noise.train()(x)
    assert abs(float(y.mean()) - 1) < 0.02 and abs(float(y.var()) - 0.2 / 0.8) < 0.02
    assert torch.equal(noise.eval()(x), x)


def test_reliability_rows(tok):
    model = tiny_model("bert", "classification")
    ests = estimate(model, tok, _samples(tok, "task", False) * 2, "task", batch_size=4, snapshots=[2, 5, 10],
                    progress=False)
    rows = reliability(ests, 10, model)
    assert [r["samples"] for r in rows] == [2, 5]
    assert {"spearman", "top5%", "top1%", "top0.5%", "top0.25%", "layer_rank_spearman"} <= set(rows[0])
    assert all(-1 <= r["spearman"] <= 1 and 0 <= r["top5%"] <= 1 for r in rows)


def test_cli_fisher_and_objective_without_head(tmp_path, tiny_dirs, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "f.safetensors"
    assert main(["fisher", str(tiny_dirs["bert"]), "--data", str(data), "--objective", "task", "--plot",
                 "--out", str(out), "--reliability", "0.4,1.0"]) == 0
    assert out.exists() and out.with_suffix(".png").exists()
    assert "| samples | spearman |" in (tmp_path / "f_reliability.md").read_text()
    capsys.readouterr()
    assert main(["fisher", str(tiny_dirs["bert"]), "--data", str(data), "--objective", "seq2seq",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: --objective: 'seq2seq' needs a seq2seq_lm head, which this bert model has no class for; " \
           "it has: classification, causal_lm, mlm, encoder" in err


@pytest.mark.parametrize("conv1d", [False, True], ids=["linear", "conv1d"])
@pytest.mark.parametrize("block", [1, 3 * 5 * 2, None], ids=["row", "2-rows-and-tail", "default"])
def test_linear_squares_in_row_blocks_equal_squared_per_sample_gradients(conv1d, block):
    from transformers.pytorch_utils import Conv1D

    from guidetune.analysis.fisher_rules import linear_squares

    gen = torch.Generator().manual_seed(0)
    b, t, n_in, n_out = 3, 4, 5, 11  # 11 rows: blocks of 2 leave a tail of 1
    a = torch.randn(b, t, n_in, generator=gen, dtype=torch.float64)
    g = torch.randn(b, t, n_out, generator=gen, dtype=torch.float64)
    m = Conv1D(n_out, n_in) if conv1d else torch.nn.Linear(n_in, n_out)
    per_sample = torch.einsum("bti,bto->bio", a, g) if conv1d else torch.einsum("bto,bti->boi", g, a)
    total = torch.ones(m.weight.shape, dtype=torch.float64)  # added to, not overwritten
    linear_squares(m, a, g, b, torch.float64, total, block=block)
    torch.testing.assert_close(total, 1 + per_sample.square().sum(0), rtol=1e-12, atol=0)


def test_batches_by_length_keep_every_snapshots_samples():
    from guidetune.analysis.fisher_estimate import by_length

    samples = [{"input_ids": [0] * n, "k": i} for i, n in enumerate([5, 2, 9, 1, 4, 3, 7])]
    assert [s["k"] for s in by_length(samples, [3, 6], "clm")] == [1, 0, 2, 3, 5, 4, 6]
    assert by_length(samples, [3, 6], "mlm") == samples  # masks are drawn per batch: order kept


def test_per_sample_nll_of_a_padded_batch_is_each_samples_own(tok):
    model = tiny_model("llama", "causal_lm").double().eval()
    samples = _samples(tok, "clm", True)[:2]
    got = per_sample_nll(model, pad_batch(tok, samples), "clm")
    for s, v in zip(samples, got):
        ids = torch.tensor([s["input_ids"]])
        want = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="sum")
        torch.testing.assert_close(v.double(), want, rtol=1e-5, atol=0)  # per_sample_nll takes float32 logits
