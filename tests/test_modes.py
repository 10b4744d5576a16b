import pytest
import torch

from guidetune.config import FinetuneSpec
from guidetune.finetune.modes import apply_mode, load_trainable, parameter_report, save_finetuned
from guidetune.testing import tiny_model


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_head_mode_trains_the_classifier_and_pooler_only():
    m = apply_mode(tiny_model("bert"), FinetuneSpec(mode="head"), "classification")
    assert _trainable(m) == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight",
                             "bert.pooler.dense.bias"}


def test_last_layer_mode_adds_the_final_block():
    m = apply_mode(tiny_model("bert"), FinetuneSpec(mode="last_layer"), "classification")
    names = _trainable(m)
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)
    assert not any(n.startswith("bert.encoder.layer.0.") or "embeddings" in n for n in names)
    g = apply_mode(tiny_model("gpt2"), FinetuneSpec(mode="last_layer"), "causal_lm")
    assert any(n.startswith("transformer.h.1.") for n in _trainable(g)) and "transformer.ln_f.weight" in _trainable(g)


def test_lora_and_adapter_modes_train_a_small_fraction():
    lora = apply_mode(tiny_model("bert"), FinetuneSpec(mode="lora", lora_r=2), "classification")
    names = _trainable(lora)
    assert any("lora_A" in n for n in names) and any("classifier" in n for n in names)
    assert not any("intermediate.dense.weight" in n and "lora" not in n for n in names)
    ad = apply_mode(tiny_model("bert"), FinetuneSpec(mode="adapter", adapter_reduction_factor=4), "classification")
    names = _trainable(ad)
    assert any("adapters.guidetune" in n for n in names) and "classifier.weight" in names
    assert "guidetune" in str(ad.active_adapters)  # active, although adapters warns otherwise while setting up
    x = torch.randint(5, 50, (2, 6))
    ad.eval()
    with torch.no_grad():  # the adapter is in the forward pass: perturbing it changes the output
        before = ad(input_ids=x).logits.clone()
        for n, p in ad.named_parameters():
            if "adapters.guidetune" in n:
                p.add_(0.5)
        assert not torch.allclose(before, ad(input_ids=x).logits)
    rep = parameter_report(ad)
    assert 0 < rep["trainable"] < rep["total"]


def test_parameter_report_counts_tied_weights_once():
    m = tiny_model("gpt2")
    rep = parameter_report(m)
    assert rep["total"] == sum(p.numel() for p in set(m.parameters()))
    assert m.lm_head.weight is m.transformer.wte.weight


@pytest.mark.parametrize("mode", ["full", "lora", "adapter", "head"])
def test_save_and_reload_gives_the_same_predictions(tmp_path, mode, tok):
    torch.manual_seed(1)
    spec = FinetuneSpec(mode=mode, lora_r=2, adapter_reduction_factor=4)
    model = apply_mode(tiny_model("bert", seed=3), spec, "classification")
    with torch.no_grad():  # make the trained part differ from its initialisation
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    x = dict(tok(["one sentence", "another one here"], return_tensors="pt", padding=True))
    want = model(**x).logits
    out = save_finetuned(model, tok, tmp_path / "model", mode)
    if mode == "full":
        from transformers import AutoModelForSequenceClassification

        again = AutoModelForSequenceClassification.from_pretrained(out)
    else:
        again = apply_mode(tiny_model("bert", seed=3), spec, "classification")
        load_trainable(again, out / "trainable.safetensors")
    again.eval()
    torch.testing.assert_close(again(**x).logits, want)
    assert not list(tmp_path.glob(".model.*"))  # no temporary directory left behind
