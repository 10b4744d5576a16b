"""Every model type of the layer table, each as a tiny random model (guidetune.testing.MODEL_TYPES):
names, capture shapes, eager equality (--verify), LoRA, and a 3-step guided training run.

A new family is tested by adding its table entry and its tiny config; nothing here names a family.
"""
from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

from conftest import tiny_config, write_jsonl
from guidetune.errors import GuidetuneError
from guidetune.layers.capture import Capture
from guidetune.layers.families import FAMILIES
from guidetune.layers.names import LayerScheme, family_of, num_heads, resolve
from guidetune.layers.verify import verify
from guidetune.testing import MODEL_TYPES, default_head, save_tiny, tiny_model

HIDDEN, FFN, HEADS, EXPERTS = 64, 128, 4, 3
TYPES = [t for t in MODEL_TYPES if t not in ("bert", "gpt2", "t5", "llama")] + ["bert", "gpt2", "t5", "llama"]


@functools.lru_cache(maxsize=None)
def _model(kind: str):
    """One shared eval-mode tiny model per type (tests that change a model build their own)."""
    return tiny_model(kind).eval()


def _inputs(kind: str) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[101, 1996, 4937, 2003, 2025, 2006, 102], [101, 2748, 2053, 102, 0, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    if family_of(_model(kind).config).encoder_decoder:
        inputs["decoder_input_ids"] = torch.tensor([[2, 1996, 4937, 2003, 2025], [2, 2748, 2053, 102, 0]])
    return inputs


def test_at_least_25_model_types_and_one_tiny_model_each():
    assert len(MODEL_TYPES) >= 25 and len(set(MODEL_TYPES)) == len(MODEL_TYPES)
    assert {f.name for f in FAMILIES} >= {"bert", "gpt2", "llama", "t5", "bart", "mixtral", "albert"}


@pytest.mark.parametrize("kind", TYPES)
def test_names_cover_every_site_and_resolve(kind):
    model = _model(kind)
    assert model.config.model_type == kind
    scheme = LayerScheme.from_model(model)
    fam = scheme.family
    assert scheme.counts == {s: 2 for s in fam.stacks}
    names = scheme.names()
    for stack in fam.stacks:
        for i in range(2):
            for site in ("out", "attn.out", "attn.probs", "ffn.out"):
                assert f"{stack}.layers.{i}.{site}" in names
            if fam.experts_key:
                assert f"{stack}.layers.{i}.ffn.experts.{EXPERTS - 1}.act" in names
                assert f"{stack}.layers.{i}.ffn.router" in names
            else:
                assert f"{stack}.layers.{i}.ffn.act" in names
    assert any("cross_attn" in n for n in names) == fam.encoder_decoder
    assert len(resolve(model, names)) == len(names)
    assert num_heads(model.config) == HEADS
    assert scheme.names() == LayerScheme.from_config(model.config).names()  # validate needs no weights


@pytest.mark.parametrize("kind", TYPES)
def test_capture_shapes(kind):
    model = _model(kind)
    inputs = _inputs(kind)
    names = LayerScheme.from_model(model).names()
    with torch.no_grad(), Capture(model, names, detach=True) as cap:
        model(**inputs)
    b, s = inputs["input_ids"].shape
    hidden = 32 if kind in ("bert", "gpt2", "t5", "llama") else HIDDEN
    assert sorted(cap) == sorted(names)
    down = {r.name: r.module for r in resolve(model, names)}
    for n in names:
        ffn = getattr(down[n], "in_features", None) or getattr(down[n], "nx", None)  # Linear / GPT-2's Conv1D
        stack, _, _, site = n.split(".", 3)
        seq = inputs["decoder_input_ids"].shape[1] if stack == "decoder" and "decoder_input_ids" in inputs else s
        shape = tuple(cap[n].shape)
        if site in ("out", "attn.out", "ffn.out"):
            assert shape == (b, seq, hidden), n
        elif site == "ffn.act":
            assert shape == (b, seq, ffn) and ffn in (2 * hidden, 4 * hidden), n
        elif site == "attn.probs":
            assert shape == (b, HEADS, seq, seq), n
            torch.testing.assert_close(cap[n].sum(-1), torch.ones(b, HEADS, seq))
        elif site == "cross_attn.probs":
            assert shape == (b, HEADS, seq, s), n
        elif site == "ffn.router":
            assert shape == (b * seq, EXPERTS), n
        elif ".experts." in site:  # the tokens routed to this expert (top-2 of 3 experts)
            assert shape[1] == ffn and 0 <= shape[0] <= b * seq, n
        else:
            raise AssertionError(f"untested site {site}")


@pytest.mark.parametrize("kind", TYPES)
def test_verify_reports_every_tensor_equal_to_eager(kind):
    model = _model(kind)
    checks = verify(model)
    bad = [(c.name, c.reference, c.max_abs_diff) for c in checks if not c.ok]
    assert not bad
    refs = {c.reference for c in checks}
    assert {"hidden_states[1]", "eager attentions", "down projection of ffn.act = ffn.out"} <= refs or (
        family_of(model.config).experts_key and {"hidden_states[1]", "eager attentions"} <= refs)
    probs = [n for n in LayerScheme.from_model(model).names() if n.endswith("probs")]
    assert len([c for c in checks if c.reference == "eager attentions"]) == len(probs)
    assert model.config._attn_implementation != "guidetune"  # restored


def test_verify_fails_on_a_wrong_table(monkeypatch):
    import guidetune.layers.families as families
    import guidetune.layers.interface as interface

    # a wrong attention scale (as if the table's adapter missed something) -> attn.probs FAIL
    monkeypatch.setattr(interface, "_scale", lambda module, query, kwargs: 0.5)
    bad = {c.name for c in verify(_model("qwen3")) if not c.ok}
    assert bad == {"decoder.layers.0.attn.probs", "decoder.layers.1.attn.probs"}
    monkeypatch.undo()
    # ffn.act pointing at the up projection instead of the down projection -> ffn.* FAIL
    fam = family_of(_model("phi").config)
    wrong = dataclasses.replace(fam, sites={"decoder": {**fam.sites["decoder"],
                                                       "ffn.act": families.Site("mlp.fc1", "input")}})
    monkeypatch.setattr(families, "FAMILIES", tuple(wrong if f is fam else f for f in families.FAMILIES))
    bad = {c.name for c in verify(_model("phi")) if not c.ok}
    assert bad == {"decoder.layers.0.ffn.act", "decoder.layers.1.ffn.act"}


@pytest.mark.parametrize("kind", TYPES)
def test_lora_on_the_family_targets_keeps_names_and_tensors(kind):
    from peft import LoraConfig, get_peft_model

    model = tiny_model(kind).eval()
    inputs = _inputs(kind)
    names = [n for n in LayerScheme.from_model(model).names() if ".layers.1." in n]
    with torch.no_grad(), Capture(model, names, detach=True) as before:
        model(**inputs)
    before = dict(before)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=list(family_of(model.config).lora_targets)))
    assert any("lora_A" in n for n, _ in wrapped.named_parameters())
    with torch.no_grad(), Capture(wrapped, names, detach=True) as after:
        wrapped(**inputs)
    assert sorted(after) == sorted(names)
    for n in names:  # LoRA's B starts at 0: the same function, so the same tensors
        torch.testing.assert_close(after[n], before[n], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("fam_data")
    rows = [{"text": "the cat is not on the mat", "label": "neg"}, {"text": "a great day", "label": "pos"}] * 4
    text = "the cat is not on the mat\na great day for a walk\n" * 8
    (d / "lm.txt").write_text(text)
    pairs = [{"source": "the cat is not on the mat", "target": "no cat"}, {"source": "a day", "target": "day"}]
    return {"train": write_jsonl(d / "train.jsonl", rows), "eval": write_jsonl(d / "eval.jsonl", rows[:2]),
            "lm": d / "lm.txt", "s2s": write_jsonl(d / "s2s.jsonl", pairs * 2)}


@pytest.mark.parametrize("kind", TYPES)
def test_three_guided_training_steps_through_the_train_path(kind, tmp_path, train_data):
    from guidetune.config import load_config
    from guidetune.experiment import run_training
    from guidetune.models import available_heads
    from guidetune.runs import RunDir

    from guidetune.layers.families import family_for_type
    from guidetune.testing import tiny_config as hf_config

    fam = family_for_type(kind)
    if fam.encoder_decoder:  # a BERT tokenizer has no EOS for BART's classification head: train seq2seq
        head = "seq2seq_lm"
    else:
        head = "classification" if "classification" in available_heads(hf_config(kind)) else default_head(kind)
    save_tiny(kind, tmp_path / "model", head=head)
    stack = "encoder" if "encoder" in fam.stacks else "decoder"
    task = {"classification": {"name": "classification", "train": str(train_data["train"]),
                               "eval": str(train_data["eval"]), "max_length": 12},
            "causal_lm": {"name": "causal_lm", "train": str(train_data["lm"]), "eval": str(train_data["lm"]),
                          "block_size": 8, "limit_blocks": 8},
            "seq2seq_lm": {"name": "seq2seq", "train": str(train_data["s2s"]), "eval": str(train_data["s2s"]),
                           "num_beams": 1, "max_new_tokens": 2, "max_target_length": 6}}[head]
    regs = [{"name": "l1", "weight": 0.1, "layers": ["final"]},
            {"name": "attention_guidance", "weight": 1.0, "layers": [f"{stack}.first"], "heads": [1],
             "pattern": "first"}]
    cfg = load_config(tiny_config(tmp_path, tmp_path / "model", train_data, task=task, regularizers=regs,
                                  finetune={"freeze_embeddings": True},  # no Adam over 30k x 64 (speed)
                                  train={"max_steps": 3, "logging_steps": 1, "save_steps": 100, "batch_size": 2},
                                  model={"name": str(tmp_path / "model"), "head": head}))
    results = run_training(cfg)
    assert results["train"]["steps"] == 3
    logs = [r for r in RunDir(cfg.run_dir).read_metrics() if "loss/attention_guidance" in r]
    assert len(logs) == 3
    for r in logs:
        assert 0 < r["loss/attention_guidance"] < 12 and r["loss/l1"] > 0  # one head: <= 1 per query row
    assert json.loads((cfg.run_dir / "results.json").read_text())["train"]["steps"] == 3


def test_a_model_type_without_a_table_trains_and_says_so_only_when_a_name_is_asked(tmp_path, train_data):
    from transformers import GPTNeoConfig, GPTNeoForSequenceClassification

    from guidetune.config import load_config
    from guidetune.experiment import run_training
    from guidetune.testing import tokenizer

    cfg_hf = GPTNeoConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
                          attention_types=[[["global", "local"], 1]], pad_token_id=0)
    model = GPTNeoForSequenceClassification(cfg_hf)
    model.save_pretrained(tmp_path / "neo")
    tokenizer().save_pretrained(tmp_path / "neo")
    cfg = load_config(tiny_config(tmp_path, tmp_path / "neo", train_data, train={"max_steps": 2}))
    assert run_training(cfg)["train"]["steps"] == 2
    with pytest.raises(GuidetuneError) as e:
        LayerScheme.from_model(model)
    msg = str(e.value)
    assert msg.startswith("model type 'gpt_neo' has no canonical layer table") and "plain fine-tuning needs none" in msg
    assert "Supported: bert," in msg and "\n" not in msg
