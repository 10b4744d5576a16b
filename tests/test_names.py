import pytest
import torch

from guidetune.errors import GuidetuneError
from guidetune.layers.names import LayerScheme, resolve
from guidetune.testing import tiny_model

SITES = ["out", "attn.out", "attn.probs", "ffn.act", "ffn.out"]


@pytest.mark.parametrize("kind,stacks", [("bert", ["encoder"]), ("gpt2", ["decoder"]), ("llama", ["decoder"]),
                                         ("t5", ["encoder", "decoder"])])
def test_every_family_has_the_canonical_sites(kind, stacks):
    names = LayerScheme.from_model(tiny_model(kind)).names()
    for stack in stacks:
        for i in range(2):
            for site in SITES:
                assert f"{stack}.layers.{i}.{site}" in names
    if kind == "t5":
        assert "decoder.layers.1.cross_attn.probs" in names
        assert "encoder.layers.0.cross_attn.probs" not in names
    else:
        assert not any("cross_attn" in n for n in names)


def test_aliases_and_globs_expand_to_canonical_names():
    s = LayerScheme.from_model(tiny_model("bert", num_hidden_layers=6))
    assert s.expand("encoder.final") == ["encoder.layers.5.out"]
    assert s.expand("encoder.middle") == ["encoder.layers.3.out"]
    assert s.expand("encoder.first.ffn.act") == ["encoder.layers.0.ffn.act"]
    assert s.expand("final") == ["encoder.layers.5.out"]
    assert s.expand("encoder.layers.2") == ["encoder.layers.2.out"]
    assert s.expand("encoder.layers.*.ffn.act") == [f"encoder.layers.{i}.ffn.act" for i in range(6)]
    assert s.expand(["encoder.final", "encoder.layers.5.out"]) == ["encoder.layers.5.out"]  # deduplicated
    assert s.expand("encoder.layers.*") == [f"encoder.layers.{i}.out" for i in range(6)]  # * stays in one component
    assert s.expand("**.attn.probs") == [f"encoder.layers.{i}.attn.probs" for i in range(6)]
    assert s.expand("encoder.layers.?.ffn.*")[:2] == ["encoder.layers.0.ffn.act", "encoder.layers.0.ffn.out"]


def test_stackless_alias_means_the_decoder_of_a_seq2seq_model():
    s = LayerScheme.from_model(tiny_model("t5"))
    assert s.expand("final") == ["decoder.layers.1.out"]
    assert s.expand("encoder.final") == ["encoder.layers.1.out"]
    assert s.expand("decoder.middle.cross_attn.probs") == ["decoder.layers.1.cross_attn.probs"]


def test_unknown_name_suggests_and_lists():
    s = LayerScheme.from_model(tiny_model("bert"))
    with pytest.raises(GuidetuneError) as e:
        s.expand("encoder.layers.1.ffn.acts")
    msg = str(e.value)
    assert "Did you mean 'encoder.layers.1.ffn.act'?" in msg and "Available:" in msg and "\n" not in msg
    with pytest.raises(GuidetuneError, match="Available"):
        s.expand("encoder.layers.7.out")
    with pytest.raises(GuidetuneError, match="matches no layer"):
        s.expand("decoder.layers.*")


def test_unsupported_model_type_is_named():
    from transformers import DistilBertConfig, DistilBertModel

    m = DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    with pytest.raises(GuidetuneError, match="model type 'distilbert' has no canonical layer table"):
        LayerScheme.from_model(m)


def _capture_all(model, names, inputs):
    from guidetune.layers.capture import Capture

    with Capture(model, names, detach=True) as cap:
        model(**inputs)
    return {n: cap[n] for n in names}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5", "llama"])
def test_names_resolve_to_the_same_tensors_after_lora(kind, tok):
    from peft import LoraConfig, get_peft_model

    model = tiny_model(kind, head="encoder" if kind != "t5" else "seq2seq_lm").eval()
    names = LayerScheme.from_model(model).names()
    inputs = dict(tok(["a small test", "two"], return_tensors="pt", padding=True))
    inputs.pop("token_type_ids")
    if kind == "t5":
        inputs["decoder_input_ids"] = torch.zeros(2, 3, dtype=torch.long)
    before = _capture_all(model, names, inputs)
    # LoRA everywhere it can go, including the FFN output projection the ffn.* names hook.
    targets = {"bert": ["query", "value", "dense"], "gpt2": ["c_attn", "c_proj"], "t5": ["q", "v", "wo"],
               "llama": ["q_proj", "k_proj", "down_proj"]}[kind]
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    after = _capture_all(wrapped, names, inputs)  # LoRA's B starts at 0: same function, same tensors
    for n in names:
        torch.testing.assert_close(after[n], before[n], atol=1e-6, rtol=0)
    r = {x.name: x for x in resolve(wrapped, names)}
    assert type(r[f"{names[0].split('.')[0]}.layers.0.ffn.act"].module).__module__.startswith("peft")


def test_names_resolve_after_bottleneck_adapters(tok):
    import adapters
    from adapters import SeqBnConfig

    model = tiny_model("bert", head="classification").eval()
    names = LayerScheme.from_model(model).names()
    inputs = dict(tok(["a small test", "two"], return_tensors="pt", padding=True))
    before = _capture_all(model, names, inputs)
    adapters.init(model)
    model.add_adapter("x", config=SeqBnConfig(reduction_factor=4))
    model.set_active_adapters("x")
    after = _capture_all(model, names, inputs)
    # The adapter sits after the FFN output projection: everything up to ffn.out of layer 0 is unchanged,
    # and every name still resolves and captures.
    for n in ["encoder.layers.0.attn.probs", "encoder.layers.0.ffn.act", "encoder.layers.0.ffn.out"]:
        torch.testing.assert_close(after[n], before[n], atol=1e-6, rtol=0)
    assert set(after) == set(names)
    assert not torch.allclose(after["encoder.layers.1.out"], before["encoder.layers.1.out"])
