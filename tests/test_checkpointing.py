"""train.gradient_checkpointing with capture-based losses: the same terms and the same gradients."""
import json

import pytest
import torch

from conftest import tiny_config
from guidetune.config import PluginSpec, build_plugin
from guidetune.errors import GuidetuneError
from guidetune.finetune.trainer import refuse_reentrant_checkpointing
from guidetune.layers.capture import Capture
from guidetune.regularizers import REGULARIZERS
from guidetune.testing import tiny_model

NO_DROPOUT = {"bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
              "gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), "llama": {}}
STACK = {"bert": "encoder", "gpt2": "decoder", "llama": "decoder"}


def _specs(stack):
    return [PluginSpec("l1", {"layers": [f"{stack}.layers.0.out", f"{stack}.layers.1.ffn.act"]}),
            PluginSpec("contrastive", {"layers": [f"{stack}.final"]}),
            PluginSpec("attention_guidance", {"layers": [f"{stack}.layers.0.attn.probs", f"{stack}.layers.1.attn.probs"],
                                              "heads": [0, 1]})]


def _step(kind, tok, checkpointing: str | None):
    """One forward/backward like GuidedTrainer.compute_loss: (term values, parameter gradients)."""
    model = tiny_model(kind, "classification", seed=1, num_labels=2, **NO_DROPOUT[kind])
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": checkpointing == "reentrant"})
    model.train()
    enc = dict(tok(["is a cat not a mammal ?", "can a cat not purr ?", "is a fish not a mammal ?", "can a fish swim ?"],
                   return_tensors="pt", padding=True))
    if kind != "bert":
        enc.pop("token_type_ids")
    batch = {**enc, "labels": torch.tensor([0, 1, 0, 1]), "gt_pair_id": torch.tensor([0, 0, 1, 1])}
    regs = [build_plugin(REGULARIZERS, s) for s in _specs(STACK[kind])]
    names = []
    for r in regs:
        r.setup(model, tok)
        names += [n for n in r.captured if n not in names]
    with Capture(model, names) as cap:
        out = model(**{k: v for k, v in batch.items() if not k.startswith("gt_")})
    terms = [r.loss(cap, batch) for r in regs]
    terms = [t[0] if isinstance(t, tuple) else t for t in terms]
    (out.loss + sum(terms)).backward()
    return [float(t) for t in terms], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_checkpointed_terms_and_gradients_equal_the_plain_run(kind, tok):
    plain_terms, plain_grads = _step(kind, tok, None)
    ck_terms, ck_grads = _step(kind, tok, "non_reentrant")
    assert ck_terms == pytest.approx(plain_terms, rel=1e-5, abs=1e-6)
    assert set(ck_grads) == set(plain_grads)
    for n, g in plain_grads.items():
        torch.testing.assert_close(ck_grads[n], g, rtol=1e-5, atol=1e-6, msg=n)


def test_reentrant_checkpointing_would_lose_the_regularizer_gradients_and_is_refused(tok):
    # Why guidetune insists on the non-reentrant kind: the reentrant one runs the first forward under
    # no_grad, so the terms have the right values but their gradients never reach the checkpointed blocks.
    plain_terms, plain_grads = _step("bert", tok, None)
    re_terms, re_grads = _step("bert", tok, "reentrant")
    assert re_terms == pytest.approx(plain_terms, rel=1e-5)
    assert max(float((re_grads[n] - plain_grads[n]).abs().max()) for n in plain_grads) > 1e-2
    model = tiny_model("bert")
    refuse_reentrant_checkpointing(model)  # off: fine
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    refuse_reentrant_checkpointing(model)
    model.gradient_checkpointing_enable()  # transformers' default is reentrant
    with pytest.raises(GuidetuneError, match=r"^train.gradient_checkpointing: the model uses reentrant"):
        refuse_reentrant_checkpointing(model)


def _train(tmp_path, tiny_dirs, cls_data, name, **train):
    from guidetune.cli import main

    regs = [{"name": "l1", "weight": 0.1, "layers": ["encoder.layers.0.out", "encoder.final"]},
            {"name": "attention_guidance", "weight": 0.5, "layers": ["encoder.layers.1.attn.probs"], "heads": [0, 2],
             "token_set": "negation"}]
    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name=name, regularizers=regs,
                      train={"max_steps": 4, "logging_steps": 1, "save_steps": 10, **train})
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / name
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss/task"' in line]


def test_training_with_checkpointing_logs_the_same_terms(tmp_path, tiny_dirs, cls_data, monkeypatch):
    """4 optimizer steps (the tiny BERT's default dropout stays on: the RNG is replayed on recomputation)."""
    import guidetune.finetune.trainer as tr

    seen, check = [], tr.refuse_reentrant_checkpointing
    monkeypatch.setattr(tr, "refuse_reentrant_checkpointing",
                        lambda m: (seen.append(m.is_gradient_checkpointing), check(m)))
    plain = _train(tmp_path, tiny_dirs, cls_data, "plain")
    ck = _train(tmp_path, tiny_dirs, cls_data, "ck", gradient_checkpointing=True)
    assert seen == [False, True]  # the second run really trained with checkpointing on
    assert [r["step"] for r in ck] == [r["step"] for r in plain] == [1, 2, 3, 4]
    for a, b in zip(plain, ck):
        for key in ("loss/task", "loss/l1", "loss/attention_guidance"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)


def test_a_model_without_checkpointing_support_is_one_line_and_writes_nothing(tmp_path, tiny_dirs, cls_data,
                                                                              monkeypatch, capsys):
    from transformers import BertForSequenceClassification

    from guidetune.cli import main

    monkeypatch.setattr(BertForSequenceClassification, "supports_gradient_checkpointing", False)
    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="nock", train={"gradient_checkpointing": True})
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: train.gradient_checkpointing: BertForSequenceClassification (bert) does not support "
                   "gradient checkpointing in transformers; set train.gradient_checkpointing=false"]
    assert not (tmp_path / "runs" / "nock").exists()
