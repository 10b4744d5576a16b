"""One small layer table per architecture family: where each canonical site lives in a block.

A family groups model types whose blocks have the same module paths. Per family:

* ``stacks``: canonical stack -> path of the block list, relative to the bare transformer;
* ``sites``: stack -> site -> :class:`Site` (module path relative to the block, and what to hook);
* ``attention``: where ``attn.probs`` comes from --

  - ``interface``: the model calls its attention through transformers' attention-function registry;
    guidetune's registered function wraps the model's own implementation and computes the
    probabilities from the q, k, mask, scaling and softcap it is handed (see :mod:`.interface`);
  - ``dropout``: the model always runs eager attention inline; the probabilities are the input of its
    attention-dropout module (exactly the model's own tensor, nothing recomputed);
  - ``bert`` / ``distilbert`` / ``t5`` / ``falcon``: hand-written recomputation from the hooked query and
    key projections (:mod:`.attention`), each checked against eager attention by ``--verify``;

* ``heads``: stack -> config keys holding its head count; ``post``: modules between the last block and
  the head (trained with the head in ``head``/``last_layer`` mode); ``lora_targets``: PEFT defaults.

Mixture of experts (``mixtral``): there is no single FFN intermediate, so ``ffn.act`` does not exist;
``ffn.experts.{e}.act`` is expert ``e``'s gated product ``act(x W1) * (x W3)`` (the input of its ``w2``)
for the tokens routed to it, ``[routed tokens, ffn]``; ``ffn.router`` is the router logits
``[batch * seq, experts]``; ``ffn.out`` the block's combined MoE output ``[batch, seq, hidden]``.

Shared layers (``albert``): every ``encoder.layers.{i}`` resolves to the one shared module and is the
``i``-th call of it in a forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HookKind = Literal["output", "input", "attention"]
AttentionSource = Literal["interface", "dropout", "bert", "distilbert", "t5", "falcon"]


@dataclass(frozen=True)
class Site:
    path: str  # module path relative to the block; "" is the block itself; "{e}" is an expert index
    hook: HookKind  # output of the module, first input of the module, or attention probabilities
    copy: bool = False  # the model later changes this tensor in place (Falcon's ffn.out): keep a copy
    flat: bool = False  # the model runs this module on [batch * seq, dim] (OPT's FFN): viewed as [batch, seq, dim]


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    stacks: dict[str, str]  # canonical stack -> path of the block list, relative to the base model
    sites: dict[str, dict[str, Site]]  # stack -> site -> Site
    count_keys: dict[str, tuple[str, ...]]  # stack -> config attributes holding the layer count
    encoder_decoder: bool = False
    lora_targets: tuple[str, ...] = field(default=())  # attention projections LoRA adapts by default
    attention: AttentionSource = "interface"
    heads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stack -> config keys of the head count
    post: tuple[str, ...] = ()  # modules after the last block, relative to the base model
    shared_layers: bool = False  # ALBERT: one module serves every layer of its group
    experts_key: str | None = None  # MoE: config key of the expert count


def sites(ffn_in: str, attn: str, attn_out: str, ffn_out: str | None = None, cross: str | None = None,
          block: str = "") -> dict[str, Site]:
    """The canonical sites of one block. ``ffn_in`` is the FFN's output projection (its input is ffn.act)."""
    out = {
        "out": Site(block, "output"),
        "attn.out": Site(attn_out, "output"),
        "attn.probs": Site(attn, "attention"),
        "ffn.act": Site(ffn_in, "input"),
        "ffn.out": Site(ffn_out or ffn_in, "output"),
    }
    if cross:
        out["cross_attn.probs"] = Site(cross, "attention")
    return out


_N = ("num_hidden_layers",)
_HEADS = ("num_attention_heads",)


def _decoder(name, types, stack, block_sites, lora, post, attention="interface", count=_N, heads=_HEADS, **kw):
    return Family(name, types, stacks={"decoder": stack}, sites={"decoder": block_sites},
                  count_keys={"decoder": count}, lora_targets=lora, attention=attention,
                  heads={"decoder": heads}, post=post, **kw)


def _encoder(name, types, stack, block_sites, lora, post, attention, count=_N, heads=_HEADS, **kw):
    return Family(name, types, stacks={"encoder": stack}, sites={"encoder": block_sites},
                  count_keys={"encoder": count}, lora_targets=lora, attention=attention,
                  heads={"encoder": heads}, post=post, **kw)


_LLAMA = sites("mlp.down_proj", "self_attn", "self_attn.o_proj")
_BART_ENC = sites("fc2", "self_attn", "self_attn.out_proj")
_BART_DEC = sites("fc2", "self_attn", "self_attn.out_proj", cross="encoder_attn")
_T5_ENC = sites("layer.1.DenseReluDense.wo", "layer.0.SelfAttention", "layer.0.SelfAttention.o")
_T5_DEC = sites("layer.2.DenseReluDense.wo", "layer.0.SelfAttention", "layer.0.SelfAttention.o",
                cross="layer.1.EncDecAttention")
_MIXTRAL = {k: v for k, v in _LLAMA.items() if not k.startswith("ffn.")} | {
    "ffn.experts.{e}.act": Site("block_sparse_moe.experts.{e}.w2", "input"),
    "ffn.router": Site("block_sparse_moe.gate", "output"),
    "ffn.out": Site("block_sparse_moe", "output"),
}

FAMILIES: tuple[Family, ...] = (
    # --- encoders that do not use the attention interface: recomputed or read from dropout's input
    _encoder("bert", ("bert", "roberta", "xlm-roberta", "camembert", "electra"), "encoder.layer",
             sites("output.dense", "attention.self", "attention.output.dense"), ("query", "value"),
             ("pooler",), "bert"),
    _encoder("distilbert", ("distilbert",), "transformer.layer",
             sites("ffn.lin2", "attention", "attention.out_lin"), ("q_lin", "v_lin"), (), "distilbert",
             count=("n_layers",), heads=("n_heads",)),
    _encoder("albert", ("albert",), "encoder.albert_layer_groups",
             sites("ffn_output", "attention", "attention.dense"), ("query", "value"), ("pooler",), "bert",
             shared_layers=True),
    _encoder("deberta-v2", ("deberta-v2",), "encoder.layer",
             sites("output.dense", "attention.self.dropout", "attention.output.dense"),
             ("query_proj", "value_proj"), (), "dropout"),
    # --- decoder-only models
    _decoder("gpt2", ("gpt2",), "h", sites("mlp.c_proj", "attn", "attn.c_proj"), ("c_attn",), ("ln_f",),
             count=("n_layer",), heads=("n_head",)),
    _decoder("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2"), "layers",
             _LLAMA, ("q_proj", "v_proj"), ("norm",)),
    _decoder("phi3", ("phi3",), "layers", _LLAMA, ("qkv_proj",), ("norm",)),
    _decoder("phi", ("phi",), "layers", sites("mlp.fc2", "self_attn", "self_attn.dense"),
             ("q_proj", "v_proj"), ("final_layernorm",)),
    _decoder("mixtral", ("mixtral",), "layers", _MIXTRAL, ("q_proj", "v_proj"), ("norm",),
             experts_key="num_local_experts"),
    _decoder("gpt_neox", ("gpt_neox",), "layers", sites("mlp.dense_4h_to_h", "attention", "attention.dense"),
             ("query_key_value",), ("final_layer_norm",)),
    _decoder("opt", ("opt",), "decoder.layers", sites("fc2", "self_attn", "self_attn.out_proj")  # FFN on [b*s, d]
             | {"ffn.act": Site("fc2", "input", flat=True), "ffn.out": Site("fc2", "output", flat=True)},
             ("q_proj", "v_proj"), ("decoder.final_layer_norm",)),
    _decoder("gptj", ("gptj",), "h", sites("mlp.fc_out", "attn.attn_dropout", "attn.out_proj"),
             ("q_proj", "v_proj"), ("ln_f",), "dropout", count=("n_layer",), heads=("n_head",)),
    _decoder("bloom", ("bloom",), "h",
             sites("mlp.dense_4h_to_h", "self_attention.attention_dropout", "self_attention.dense"),
             ("query_key_value",), ("ln_f",), "dropout", count=("n_layer",), heads=("n_head",)),
    _decoder("falcon", ("falcon",), "h",  # its block adds the attention output into ffn.out in place
             sites("mlp.dense_4h_to_h", "self_attention", "self_attention.dense")
             | {"ffn.out": Site("mlp.dense_4h_to_h", "output", copy=True)},
             ("query_key_value",), ("ln_f",), "falcon"),
    # --- encoder-decoders
    Family("t5", ("t5", "mt5"), stacks={"encoder": "encoder.block", "decoder": "decoder.block"},
           sites={"encoder": _T5_ENC, "decoder": _T5_DEC},
           count_keys={"encoder": ("num_layers",), "decoder": ("num_decoder_layers", "num_layers")},
           encoder_decoder=True, lora_targets=("q", "v"), attention="t5",
           heads={"encoder": ("num_heads",), "decoder": ("num_heads",)}, post=("decoder.final_layer_norm",)),
    Family("bart", ("bart", "mbart"), stacks={"encoder": "encoder.layers", "decoder": "decoder.layers"},
           sites={"encoder": _BART_ENC, "decoder": _BART_DEC},
           count_keys={"encoder": ("encoder_layers",), "decoder": ("decoder_layers",)},
           encoder_decoder=True, lora_targets=("q_proj", "v_proj"),
           heads={"encoder": ("encoder_attention_heads",), "decoder": ("decoder_attention_heads",)},
           post=("decoder.layer_norm",)),
)


def supported_types() -> list[str]:
    return [t for fam in FAMILIES for t in fam.model_types]


def family_for_type(model_type: str | None) -> Family:
    """The family of a model type; KeyError if none (callers turn it into their own message)."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise KeyError(model_type)
