import pytest
import torch

from guidetune.layers.capture import Capture
from guidetune.layers.families import FAMILIES
from guidetune.layers.names import LayerScheme
from guidetune.testing import tiny_model

# One model type per family of the table (the first listed), so a new family is tested by its entry.
FIRST_TYPES = [f.model_types[0] for f in FAMILIES]


def _seq2seq(kind) -> bool:
    return any(kind in f.model_types and f.encoder_decoder for f in FAMILIES)


def _inputs(tok, kind):
    enc = dict(tok(["the cat is not on the mat today", "no"], return_tensors="pt", padding=True))
    enc.pop("token_type_ids")
    if _seq2seq(kind):
        enc["labels"] = torch.tensor([[5, 6, 7, 8], [9, 10, -100, -100]])
    return enc


def _eager_reference(model, kind, inputs):
    model.set_attn_implementation("eager")
    out = model(**inputs, output_attentions=True)
    if _seq2seq(kind):
        return {"encoder.attn.probs": out.encoder_attentions, "decoder.attn.probs": out.decoder_attentions,
                "decoder.cross_attn.probs": out.cross_attentions}
    return {"attn.probs": out.attentions}


@pytest.mark.parametrize("kind", FIRST_TYPES + ["qwen3", "gemma2", "mistral"])
def test_captured_attention_equals_eager_attention(kind, tok):
    # qwen3 (q/k norms), gemma2 (softcap, sliding window) and mistral (sliding window 4 < length) come
    # out right through the attention interface with no per-family code.
    model = tiny_model(kind).eval()
    before = model.config._attn_implementation
    inputs = _inputs(tok, kind)
    names = [n for n in LayerScheme.from_model(model).names() if n.endswith("probs")]
    with Capture(model, names) as cap:  # the model keeps its default (SDPA) implementation
        model(**inputs)
    assert model.config._attn_implementation == before  # restored after the capture
    ref = _eager_reference(model, kind, inputs)
    for n in names:
        stack, _, i, site = n.split(".", 3)
        key = f"{stack}.{site}" if _seq2seq(kind) else site
        q_mask = cap.token_mask(n)[:, None, :, None]  # rows of padding queries are not meaningful
        torch.testing.assert_close(cap[n] * q_mask, ref[key][int(i)].float() * q_mask, atol=1e-5, rtol=0)


def test_interface_capture_switches_only_inside_and_keeps_the_graph(tok):
    from guidetune.layers import interface

    model = tiny_model("qwen3").train()
    with Capture(model, "decoder.layers.1.attn.probs") as cap:
        assert model.config._attn_implementation == "guidetune"
        model(**_inputs(tok, "qwen3"))
    assert model.config._attn_implementation == "sdpa" and not interface._STORES and not interface._WRAPPED
    p = cap.attention("decoder.layers.1.attn.probs", [2])
    assert p.shape[1] == 1 and p.requires_grad
    p[..., 0].sum().backward()
    assert model.model.layers[1].self_attn.q_norm.weight.grad.abs().sum() > 0  # through the q norm
    assert model.model.layers[1].self_attn.o_proj.weight.grad is None  # probabilities come before o_proj


def test_head_subset_matches_full_probabilities(tok):
    model = tiny_model("bert", head="encoder").eval()
    with Capture(model, "encoder.layers.1.attn.probs") as cap:
        model(**_inputs(tok, "bert"))
    full = cap["encoder.layers.1.attn.probs"]
    torch.testing.assert_close(cap.attention("encoder.layers.1.attn.probs", [1, 3]), full[:, [1, 3]])
    assert cap.num_heads("encoder.layers.1.attn.probs") == 4


def test_captures_exactly_the_requested_names_and_removes_hooks(tok):
    model = tiny_model("bert", head="encoder")
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with Capture(model, ["encoder.final", "encoder.layers.0.ffn.act"]) as cap:
        model(**_inputs(tok, "bert"))
    assert sorted(cap) == ["encoder.layers.0.ffn.act", "encoder.layers.1.out"]
    assert cap["encoder.layers.0.ffn.act"].shape[-1] == 64
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert after == before


def test_hooks_are_removed_when_the_forward_raises(tok):
    model = tiny_model("bert", head="encoder")
    with pytest.raises(RuntimeError):
        with Capture(model, ["encoder.layers.*.attn.probs", "encoder.final"]):
            model(input_ids=torch.full((1, 500), 5))  # longer than max_position_embeddings
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_graph_is_kept_in_training_and_dropped_when_detached(tok):
    model = tiny_model("bert", head="encoder").train()
    with Capture(model, "encoder.final") as cap:
        model(**_inputs(tok, "bert"))
    h = cap["encoder.layers.1.out"]
    assert h.requires_grad
    h.sum().backward()
    assert model.encoder.layer[0].intermediate.dense.weight.grad is not None
    with Capture(model, "encoder.final", detach=True) as cap:
        model(**_inputs(tok, "bert"))
    assert not cap["encoder.layers.1.out"].requires_grad


def test_token_mask_follows_padding_and_seq2seq_labels(tok):
    model = tiny_model("t5", head="seq2seq_lm")
    inputs = _inputs(tok, "t5")
    with Capture(model, ["encoder.final", "decoder.final"]) as cap:
        model(**inputs)
    assert torch.equal(cap.token_mask("encoder.layers.1.out"), inputs["attention_mask"].bool())
    assert cap.token_mask("decoder.layers.1.out").tolist() == [[True] * 4, [True, True, False, False]]


def test_empty_capture_registers_nothing(tok):
    model = tiny_model("bert", head="encoder")
    with Capture(model, []) as cap:
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
        model(**_inputs(tok, "bert"))
    assert len(cap) == 0
