import numpy as np
import pytest
import torch

from guidetune.config import PluginSpec, build_plugin
from guidetune.errors import GuidetuneError
from guidetune.layers.capture import Capture
from guidetune.patterns import TokenSet
from guidetune.regularizers import REGULARIZERS
from guidetune.testing import tiny_model


def _reg(model, tok, **params):
    r = build_plugin(REGULARIZERS, PluginSpec("attention_guidance", params))
    r.setup(model, tok)
    return r


def _loss(model, reg, batch):
    with Capture(model, reg.captured) as cap:
        model(**{k: v for k, v in batch.items() if not k.startswith("gt_")})
    return reg.loss(cap, batch), cap


def test_token_set_matches_words_and_their_pieces(tok):
    ts = TokenSet("t", ["doesn't", "not", "in fact"], tok)
    ids = tok(["it doesn't rain , in fact it is not wet", "no"], return_tensors="pt", padding=True)["input_ids"]
    marked = [t for t, m in zip(tok.convert_ids_to_tokens(ids[0]), ts.mask(ids)[0]) if m]
    assert marked == ["doesn", "'", "t", "in", "fact", "not"]
    assert not ts.mask(ids)[1].any()


def test_a_set_the_tokenizer_cannot_match_names_its_words(tok, tmp_path):
    f = tmp_path / "emoji.txt"
    f.write_text("🦄\n🐉\n")
    with pytest.raises(GuidetuneError, match=r"token set 'emoji': the tokenizer can match none of its words \(🦄, 🐉\)"):
        TokenSet.load(str(f), tok)


@pytest.mark.parametrize("normalize", [True, False])
def test_loss_equals_the_brute_force_sum(tok, normalize):
    model = tiny_model("bert", head="encoder")
    batch = dict(tok(["the cat is not here and never was", "no dogs"], return_tensors="pt", padding=True))
    reg = _reg(model, tok, layers=["encoder.layers.0", "encoder.layers.1"], heads=[1, 3], normalize=normalize)
    (loss, parts), cap = _loss(model, reg, batch)
    neg = reg._set.mask(batch["input_ids"])
    mask = batch["attention_mask"].bool()
    expected, by_head = 0.0, {}
    for name in reg.captured:
        probs = cap[name].detach()
        for h in (1, 3):
            head_total = 0.0
            for b in range(2):
                valid = [i for i in range(mask.shape[1]) if mask[b, i]]
                target = [1.0 if neg[b, k] else 0.0 for k in valid]
                if normalize and sum(target) == 0:
                    continue  # untouched row
                if normalize:
                    target = [t / sum(target) for t in target]
                for q in valid:
                    for j, k in enumerate(valid):
                        head_total += (float(probs[b, h, q, k]) - target[j]) ** 2
            by_head[(name, h)] = head_total / 2
            expected += head_total / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(parts["encoder1.h3"]) == pytest.approx(by_head[("encoder.layers.1.attn.probs", 3)], rel=1e-5)
    assert set(parts) == {"encoder0.h1", "encoder0.h3", "encoder1.h1", "encoder1.h3"}


def test_gradient_reaches_exactly_the_guided_heads(tok):
    model = tiny_model("bert", head="encoder")
    batch = dict(tok(["it is not true", "never again no"], return_tensors="pt", padding=True))
    reg = _reg(model, tok, layers=["encoder.layers.1"], heads=[2])
    (loss, _), _ = _loss(model, reg, batch)
    loss.backward()
    att = model.encoder.layer[1].attention.self
    d = att.attention_head_size
    for proj in (att.query, att.key):
        rows = proj.weight.grad.abs().sum(1)  # one row per output unit; head j owns rows j*d .. (j+1)*d
        for head in range(4):
            got = rows[head * d:(head + 1) * d].sum()
            assert (got > 0) if head == 2 else (got == 0), (proj, head)
    assert att.value.weight.grad is None or att.value.weight.grad.abs().sum() == 0
    assert model.encoder.layer[1].intermediate.dense.weight.grad is None


def test_causal_attention_only_targets_visible_keys(tok):
    model = tiny_model("gpt2", head="causal_lm").eval()  # same hidden states in both forwards (no dropout)
    batch = dict(tok(["is it not so", "no"], return_tensors="pt", padding=True))
    batch.pop("token_type_ids")
    reg = _reg(model, tok, layers=["decoder.layers.*"], heads=[0, 1], pattern="previous")
    (loss, parts), cap = _loss(model, reg, batch)
    probs = cap["decoder.layers.0.attn.probs"][0, 0].detach()
    n = int(batch["attention_mask"][0].sum())
    # by hand for head 0 of layer 0, example 0: rows 1..n-1 target the previous token; row 0 has no target
    by_hand = sum(float(((probs[q, :q + 1] - torch.eye(n)[q - 1, :q + 1]) ** 2).sum()) for q in range(1, n))
    (loss1, parts1), _ = _loss(model, reg, {k: v[:1] for k, v in batch.items()})
    assert float(parts1["decoder0.h0"]) == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(GuidetuneError, match="'next' cannot be reached by causal self-attention"):
        _reg(model, tok, layers=["decoder.layers.0"], pattern="next")


def test_t5_encoder_decoder_and_cross_attention(tok):
    model = tiny_model("t5", head="seq2seq_lm")
    enc = dict(tok(["the answer is not yes", "no way"], return_tensors="pt", padding=True))
    enc.pop("token_type_ids")
    enc["labels"] = tok(["not at all", "never"], return_tensors="pt", padding=True)["input_ids"].masked_fill(
        tok(["not at all", "never"], return_tensors="pt", padding=True)["attention_mask"] == 0, -100)
    for layers in (["encoder.layers.0"], ["decoder.layers.1"], ["decoder.layers.0.cross_attn.probs"]):
        reg = _reg(model, tok, layers=layers, heads=[0, 3])
        (loss, parts), _ = _loss(model, reg, enc)
        assert torch.isfinite(loss) and float(loss) > 0, layers
        loss.backward()


def test_bad_heads_and_pattern_shapes(tok, tmp_path):
    model = tiny_model("bert", head="encoder")
    with pytest.raises(GuidetuneError, match=r"heads: head 4 is beyond encoder.layers.0.attn.probs's 4 heads \(0-3\)"):
        _reg(model, tok, layers=["encoder.layers.0"], heads=[1, 4])
    np.save(tmp_path / "p.npy", np.eye(5, dtype=np.float32))
    reg = _reg(model, tok, layers=["encoder.layers.0"], pattern="matrix", matrix=str(tmp_path / "p.npy"))
    batch = dict(tok(["one two three four five six", "x"], return_tensors="pt", padding=True))
    with pytest.raises(GuidetuneError, match=r"pattern shape \(5, 5\) does not fit encoder.layers.0.attn.probs's "
                                             r"attention of \[query, key\] = \[8, 8\]"):
        _loss(model, reg, batch)


@pytest.mark.parametrize("kind,layer,attn", [("qwen3", "decoder.layers.1", "model.layers.1.self_attn"),
                                             ("bart", "decoder.layers.0.cross_attn.probs",
                                              "model.decoder.layers.0.encoder_attn")])
def test_interface_guidance_trains_only_the_guided_heads_queries(kind, layer, attn, tok):
    # Through transformers' attention interface: the gradient of one guided head reaches exactly that
    # head's rows of the query projection (after Qwen3's q norm / BART's cross-attention), nothing after.
    model = tiny_model(kind).eval()
    batch = dict(tok(["it is not so , not at all", "no"], return_tensors="pt", padding=True))
    batch.pop("token_type_ids")
    if kind == "bart":
        batch["labels"] = torch.tensor([[1996, 4937, 102], [2053, 102, -100]])
    reg = _reg(model, tok, layers=[layer], heads=[2], pattern="first")
    (loss, parts), cap = _loss(model, reg, batch)
    assert float(loss) > 0 and set(parts) == {f"{layer.split('.')[0]}{layer.split('.')[2]}"
                                              f"{'.x' if 'cross' in layer else ''}.h2"}
    loss.backward()
    module = model.get_submodule(attn)
    d = module.head_dim
    rows = module.q_proj.weight.grad.abs().sum(1)
    for head in range(4):
        got = rows[head * d:(head + 1) * d].sum()
        assert (got > 0) if head == 2 else (got == 0), head
    out_proj = getattr(module, "o_proj", None) or module.out_proj
    assert out_proj.weight.grad is None or out_proj.weight.grad.abs().sum() == 0
    assert model.config._attn_implementation == "sdpa"
