"""Canonical layer names shared by capture, regularizers, Fisher and the analyses.

A canonical name is ``{stack}.layers.{i}.{site}``:

* ``stack`` is ``encoder`` or ``decoder``; decoder-only models (GPT-2, LLaMA) use ``decoder``.
* ``site`` is one of

  ===================  ==========================================================  ========================
  site                 tensor                                                      shape
  ===================  ==========================================================  ========================
  ``out``              the block's output hidden states                            [batch, seq, hidden]
  ``attn.out``         self-attention output projection, before dropout/residual   [batch, seq, hidden]
  ``attn.probs``       self-attention probabilities                                [batch, head, query, key]
  ``cross_attn.probs`` T5 decoder cross-attention probabilities                    [batch, head, query, key]
  ``ffn.act``          FFN intermediate after the activation: the "neurons"        [batch, seq, ffn]
  ``ffn.out``          FFN output projection, before dropout/residual              [batch, seq, hidden]
  ===================  ==========================================================  ========================

  ``ffn.act`` is the input of the FFN's output projection, which is the same tensor in every family:
  ``act(x W1)`` for BERT/GPT-2/T5, and ``act(x W_gate) * (x W_up)`` for gated FFNs (LLaMA, T5 v1.1),
  i.e. the gated product is "the neurons". In T5 it is taken after T5's own FFN dropout (identity in eval).

Globs: ``*`` matches one dotted component, ``**`` any number (``**.attn.probs`` = every attention).
Aliases: ``{stack}.first``, ``{stack}.middle`` (layer ``n // 2``), ``{stack}.final`` (layer ``n - 1``), and
stack-less ``first``/``middle``/``final`` for the stack that feeds the head (the decoder if the model
has one, else the encoder); a name without a site means ``.out`` (``encoder.final`` == ``encoder.layers.5.out`` on MiniLM). Globs
(``encoder.layers.*.ffn.act``, ``**.attn.probs``) expand over the canonical names.

Names are resolved against the model at hand, after unwrapping PEFT, DDP and AdapterHub wrappers, so
the same name addresses the same tensor after LoRA or bottleneck-adapter wrapping.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn as nn

from ..errors import GuidetuneError, did_you_mean

HookKind = Literal["output", "input", "attention"]


@dataclass(frozen=True)
class Site:
    path: str  # module path relative to the block; "" is the block itself
    hook: HookKind  # output of the module, first input of the module, or attention recompute


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    stacks: dict[str, str]  # canonical stack -> path of the block list, relative to the base model
    sites: dict[str, dict[str, Site]]  # stack -> site -> Site
    count_keys: dict[str, tuple[str, ...]]  # stack -> config attributes holding the layer count
    encoder_decoder: bool = False
    lora_targets: tuple[str, ...] = field(default=())  # attention projections LoRA adapts by default


def _ffn(path: str, attn: str, attn_out: str) -> dict[str, Site]:
    return {
        "out": Site("", "output"),
        "attn.out": Site(attn_out, "output"),
        "attn.probs": Site(attn, "attention"),
        "ffn.act": Site(path, "input"),
        "ffn.out": Site(path, "output"),
    }


FAMILIES: tuple[Family, ...] = (
    Family(
        "bert",
        ("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        stacks={"encoder": "encoder.layer"},
        sites={"encoder": _ffn("output.dense", "attention.self", "attention.output.dense")},
        count_keys={"encoder": ("num_hidden_layers",)},
        lora_targets=("query", "value"),
    ),
    Family(
        "gpt2",
        ("gpt2",),
        stacks={"decoder": "h"},
        sites={"decoder": _ffn("mlp.c_proj", "attn", "attn.c_proj")},
        count_keys={"decoder": ("n_layer",)},
        lora_targets=("c_attn",),
    ),
    Family(
        "llama",
        ("llama", "mistral", "qwen2"),
        stacks={"decoder": "layers"},
        sites={"decoder": _ffn("mlp.down_proj", "self_attn", "self_attn.o_proj")},
        count_keys={"decoder": ("num_hidden_layers",)},
        lora_targets=("q_proj", "v_proj"),
    ),
    Family(
        "t5",
        ("t5", "mt5"),
        stacks={"encoder": "encoder.block", "decoder": "decoder.block"},
        sites={
            "encoder": _ffn("layer.1.DenseReluDense.wo", "layer.0.SelfAttention", "layer.0.SelfAttention.o"),
            "decoder": {
                **_ffn("layer.2.DenseReluDense.wo", "layer.0.SelfAttention", "layer.0.SelfAttention.o"),
                "cross_attn.probs": Site("layer.1.EncDecAttention", "attention"),
            },
        },
        count_keys={"encoder": ("num_layers",), "decoder": ("num_decoder_layers", "num_layers")},
        encoder_decoder=True,
        lora_targets=("q", "v"),
    ),
)

ALIASES = ("first", "middle", "final")
_NAME = re.compile(r"^(?P<stack>encoder|decoder)\.layers\.(?P<idx>\d+)(?:\.(?P<site>.+))?$")


def _glob(pattern: str) -> "re.Pattern[str]":
    """``*`` matches within one dotted component, ``**`` across components, ``?`` one character."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^.]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^.]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def family_of(config: Any) -> Family:
    """The layer-name table for a model config (``config.model_type``)."""
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    supported = [t for f in FAMILIES for t in f.model_types]
    raise GuidetuneError(
        f"model type '{model_type}' has no canonical layer table.{did_you_mean(str(model_type), supported)}"
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside DDP / PEFT wrappers (AdapterHub modifies the model in place)."""
    while True:
        if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) and type(model).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
        ):
            model = model.module
        elif hasattr(model, "get_base_model") and type(model).__name__.startswith("Peft"):
            model = model.get_base_model()
        else:
            return model


def base_of(model: nn.Module) -> nn.Module:
    """The bare transformer (BertModel, GPT2Model, ...) inside a task-head model."""
    hf = unwrap(model)
    fam = family_of(hf.config)
    if fam.name == "t5":  # T5 heads keep encoder/decoder at the top level
        return hf
    return getattr(hf, "base_model", hf)


@dataclass(frozen=True)
class LayerScheme:
    """Canonical names for one model: its family and layer counts."""

    family: Family
    counts: dict[str, int]

    @classmethod
    def from_config(cls, config: Any) -> "LayerScheme":
        fam = family_of(config)
        counts = {}
        is_encoder_only = getattr(config, "is_encoder_decoder", fam.encoder_decoder) is False and fam.encoder_decoder
        for stack, keys in fam.count_keys.items():
            if is_encoder_only and stack == "decoder":
                continue
            for key in keys:
                n = getattr(config, key, None)
                if n is not None:
                    counts[stack] = int(n)
                    break
        return cls(fam, counts)

    @classmethod
    def from_model(cls, model: nn.Module) -> "LayerScheme":
        hf = unwrap(model)
        fam = family_of(hf.config)
        base = base_of(model)
        counts = {}
        for stack, path in fam.stacks.items():
            try:
                counts[stack] = len(base.get_submodule(path))
            except AttributeError:
                continue  # e.g. T5EncoderModel has no decoder
        return cls(fam, counts)

    def names(self) -> list[str]:
        """Every canonical name, in model order."""
        out = []
        for stack, n in self.counts.items():
            for i in range(n):
                out += [f"{stack}.layers.{i}.{site}" for site in self.family.sites[stack]]
        return out

    def alias_index(self, stack: str, alias: str) -> int:
        n = self.counts[stack]
        return {"first": 0, "middle": n // 2, "final": n - 1}[alias]

    def summary(self) -> str:
        parts = []
        for stack, n in self.counts.items():
            sites = ", ".join(self.family.sites[stack])
            parts.append(
                f"{stack}.layers.{{0..{n - 1}}}.{{{sites}}}; aliases {stack}.first/middle/final"
                f" (= layers 0/{n // 2}/{n - 1}); globs such as {stack}.layers.*.ffn.act"
                + ("; first/middle/final" if stack == self.head_stack() else "")
            )
        return " | ".join(parts)

    def head_stack(self) -> str:
        """The stack that feeds the model's head: decoder if there is one, else encoder."""
        return "decoder" if "decoder" in self.counts else "encoder"

    def _canonical(self, name: str) -> str:
        parts = name.split(".")
        if parts[0] in ALIASES:  # stack-less alias: the stack that feeds the head
            parts = [self.head_stack()] + parts
        if len(parts) >= 2 and parts[0] in self.counts and parts[1] in ALIASES:
            rest = ".".join(parts[2:])
            name = f"{parts[0]}.layers.{self.alias_index(parts[0], parts[1])}" + (f".{rest}" if rest else "")
        m = _NAME.match(name)
        if m and m.group("site") is None:
            name += ".out"
        return name

    def expand(self, names: list[str] | str) -> list[str]:
        """Canonical names for user-given names, aliases and globs (order kept, duplicates dropped)."""
        if isinstance(names, str):
            names = [names]
        known = self.names()
        known_set = set(known)
        out: list[str] = []
        for raw in names:
            if not isinstance(raw, str) or not raw:
                raise GuidetuneError(f"layer name must be a non-empty string, got {raw!r}")
            name = self._canonical(raw)
            if any(ch in name for ch in "*?["):
                hits = [k for k in known if _glob(name).fullmatch(k)]
                if not hits:  # "encoder.layers.*" means the block outputs
                    hits = [k for k in known if _glob(name + ".out").fullmatch(k)]
                if not hits:
                    raise GuidetuneError(
                        f"layer pattern '{raw}' matches no layer of this {self.family.name} model."
                        f" Available: {self.summary()}"
                    )
            elif name in known_set:
                hits = [name]
            else:
                hint = did_you_mean(name, known).split(" Available")[0]
                raise GuidetuneError(
                    f"unknown layer name '{raw}' for this {self.family.name} model.{hint} Available: {self.summary()}"
                )
            out += [h for h in hits if h not in out]
        return out

    def parse(self, canonical: str) -> tuple[str, int, str]:
        m = _NAME.match(canonical)
        if not m or canonical not in set(self.names()):
            raise GuidetuneError(f"not a canonical layer name: '{canonical}'. Available: {self.summary()}")
        return m.group("stack"), int(m.group("idx")), m.group("site")


@dataclass
class Resolved:
    """Where a canonical name lives in a concrete model."""

    name: str
    stack: str
    layer: int
    site: str
    module: nn.Module
    hook: HookKind
    family: Family


def resolve(model: nn.Module, names: list[str] | str) -> list[Resolved]:
    """Resolve names (aliases/globs allowed) to modules of ``model`` (wrapped or not)."""
    scheme = LayerScheme.from_model(model)
    base = base_of(model)
    out = []
    for name in scheme.expand(names):
        stack, idx, site = scheme.parse(name)
        block = base.get_submodule(scheme.family.stacks[stack])[idx]
        spec = scheme.family.sites[stack][site]
        module = block.get_submodule(spec.path) if spec.path else block
        out.append(Resolved(name, stack, idx, site, module, spec.hook, scheme.family))
    return out


def module_paths(model: nn.Module) -> dict[int, str]:
    """id(module) -> its dotted path in ``model`` as given (with wrappers), for display."""
    return {id(m): n for n, m in model.named_modules()}
