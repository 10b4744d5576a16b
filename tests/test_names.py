import pytest
import torch

from guidetune.errors import GuidetuneError
from guidetune.layers.families import FAMILIES
from guidetune.layers.names import LayerScheme, resolve
from guidetune.testing import tiny_model

SITES = ["out", "attn.out", "attn.probs", "ffn.act", "ffn.out"]


def _families() -> list[tuple[str, list[str]]]:
    """(first model type, stacks) of every family in the table: a new family is tested by its entry alone."""
    return [(f.model_types[0], list(f.stacks)) for f in FAMILIES]


@pytest.mark.parametrize("kind,stacks", _families())
def test_every_family_has_the_canonical_sites(kind, stacks):
    scheme = LayerScheme.from_model(tiny_model(kind))
    names = scheme.names()
    for stack in stacks:
        for i in range(2):
            for site in SITES:
                if site == "ffn.act" and scheme.family.experts_key:  # MoE: one ffn.act per expert
                    site = "ffn.experts.0.act"
                assert f"{stack}.layers.{i}.{site}" in names
    if scheme.family.encoder_decoder:
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
    from transformers import GPTNeoConfig, GPTNeoModel

    m = GPTNeoModel(GPTNeoConfig(vocab_size=100, hidden_size=16, num_layers=1, num_heads=2,
                                 attention_types=[[["global"], 1]]))
    with pytest.raises(GuidetuneError, match="model type 'gpt_neo' has no canonical layer table, so layer names"):
        LayerScheme.from_model(m)


def test_moe_sites_per_expert_and_router():
    s = LayerScheme.from_model(tiny_model("mixtral"))
    assert s.expand("decoder.layers.0.ffn.experts.*.act") == [f"decoder.layers.0.ffn.experts.{e}.act" for e in range(3)]
    assert s.expand("first.ffn.router") == ["decoder.layers.0.ffn.router"]
    with pytest.raises(GuidetuneError, match=r"ffn.act does not exist in mixtral \(mixture of 3 experts\): use "
                                             r"decoder.layers.0.ffn.experts.\{0..2\}.act"):
        s.expand("decoder.layers.0.ffn.act")


def test_albert_layers_are_calls_of_the_shared_layer(tok):
    from guidetune.layers.capture import Capture

    model = tiny_model("albert", num_hidden_layers=3).eval()
    r = resolve(model, "encoder.layers.*")
    assert [x.module for x in r] == [r[0].module] * 3 and [x.call for x in r] == [0, 1, 2]
    inputs = dict(tok(["a small test", "two"], return_tensors="pt", padding=True))
    with torch.no_grad(), Capture(model, "encoder.layers.*") as cap:
        out = model(**inputs, output_hidden_states=True)
    for i in range(3):
        torch.testing.assert_close(cap[f"encoder.layers.{i}.out"], out.hidden_states[i + 1])


def test_unavailable_attention_is_one_line_naming_the_type_and_what_is_available():
    s = LayerScheme.from_model(tiny_model("falcon", alibi=True))
    assert not any(n.endswith("attn.probs") for n in s.names())
    with pytest.raises(GuidetuneError) as e:
        s.expand("decoder.layers.0.attn.probs")
    msg = str(e.value)
    assert msg.startswith("attn.probs is not available for falcon: Falcon with alibi=true") and "\n" not in msg
    assert msg.endswith("Available sites: out, attn.out, ffn.act, ffn.out")


def _capture_all(model, names, inputs):
    from guidetune.layers.capture import Capture

    with Capture(model, names, detach=True) as cap:
        model(**inputs)
    return {n: cap[n] for n in names}


@pytest.mark.parametrize("kind", [f.model_types[0] for f in FAMILIES if not f.experts_key])
def test_names_resolve_to_the_same_tensors_after_lora(kind, tok):
    from peft import LoraConfig, get_peft_model

    model = tiny_model(kind).eval()
    names = LayerScheme.from_model(model).names()
    inputs = dict(tok(["a small test", "two"], return_tensors="pt", padding=True))
    inputs.pop("token_type_ids")
    if LayerScheme.from_model(model).family.encoder_decoder:
        inputs["decoder_input_ids"] = torch.full((2, 3), 2, dtype=torch.long)
    before = _capture_all(model, names, inputs)
    # LoRA on the family's default targets plus the FFN output projection the ffn.* names hook.
    fam = LayerScheme.from_model(model).family
    down = fam.sites[names[0].split(".")[0]]["ffn.act"].path.split(".")[-1]
    targets = list(fam.lora_targets) + [down]
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
