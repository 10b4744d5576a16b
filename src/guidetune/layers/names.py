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
  ``cross_attn.probs`` decoder cross-attention probabilities (T5, BART)            [batch, head, query, key]
  ``ffn.act``          FFN intermediate after the activation: the "neurons"        [batch, seq, ffn]
  ``ffn.out``          FFN output projection, before dropout/residual              [batch, seq, hidden]
  ===================  ==========================================================  ========================

  ``ffn.act`` is the input of the FFN's output projection, which is the same tensor in every family:
  ``act(x W1)`` for BERT/GPT-2/T5, and ``act(x W_gate) * (x W_up)`` for gated FFNs (LLaMA, T5 v1.1),
  i.e. the gated product is "the neurons". In T5 it is taken after T5's own FFN dropout (identity in eval).

Globs: ``*`` matches one dotted component, ``**`` any number (``**.attn.probs`` = every attention).
Aliases: ``{stack}.first``, ``{stack}.middle`` (layer ``n // 2``), ``{stack}.final`` (layer ``n - 1``), and
stack-less ``first``/``middle``/``final`` for the stack that feeds the head (the decoder if the model
has one, else the encoder); a name without a site means ``.out`` (``encoder.final`` ==
``encoder.layers.5.out`` on MiniLM). Globs
(``encoder.layers.*.ffn.act``, ``**.attn.probs``) expand over the canonical names.

Which model types have a table, and the per-family details (mixture-of-experts sites, ALBERT's shared
layers, where ``attn.probs`` comes from) live in :mod:`guidetune.layers.families`. A model type without a
table trains normally; only asking for a layer name fails, naming the supported types.

Names are resolved against the model at hand, after unwrapping PEFT, DDP and AdapterHub wrappers, so
the same name addresses the same tensor after LoRA or bottleneck-adapter wrapping.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import GuidetuneError, did_you_mean
from .families import FAMILIES, Family, HookKind, Site, family_for_type, supported_types

__all__ = ["FAMILIES", "Family", "HookKind", "LayerScheme", "Resolved", "Site", "base_of", "family_of",
           "has_table", "module_paths", "num_heads", "resolve", "unwrap"]

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
    try:
        return family_for_type(model_type)
    except KeyError:
        supported = supported_types()
        raise GuidetuneError(
            f"model type '{model_type}' has no canonical layer table, so layer names (regularizers, capture, "
            f"analyses, Fisher groups) cannot be used with it; plain fine-tuning needs none."
            f"{did_you_mean(str(model_type), supported).split(' Available')[0]} Supported: {', '.join(supported)}"
        ) from None


def has_table(config: Any) -> bool:
    """True when ``config.model_type`` has a layer table."""
    return getattr(config, "model_type", None) in supported_types()


# Inner-module attributes of torch's FSDP (1), activation-checkpoint and torch.compile wrappers: they
# appear in module and parameter paths of a wrapped model and are removed by strip_wrappers().
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def strip_wrappers(path: str) -> str:
    """A module/parameter path of a wrapped model with the wrappers' own segments removed."""
    return ".".join(seg for seg in path.split(".") if seg not in WRAPPER_SEGMENTS)


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside DDP / FSDP / DeepSpeed / activation-checkpoint / torch.compile / PEFT
    wrappers (AdapterHub modifies the model in place; FSDP2's fully_shard too). Blocks wrapped one by one
    (FSDP auto-wrap) forward attribute access to the block, so canonical names resolve through them."""
    while True:
        if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) and type(model).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
            "FullyShardedDataParallel",
            "DeepSpeedEngine",
        ):
            model = model.module
        elif type(model).__name__ == "CheckpointWrapper" and hasattr(model, "_checkpoint_wrapped_module"):
            model = model._checkpoint_wrapped_module
        elif type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and type(model).__name__.startswith("Peft"):
            model = model.get_base_model()
        else:
            return model


def base_of(model: nn.Module) -> nn.Module:
    """The bare transformer (BertModel, GPT2Model, ...) inside a task-head model (any model type)."""
    hf = unwrap(model)
    if getattr(hf.config, "model_type", None) in ("t5", "mt5"):  # T5 heads keep encoder/decoder at the top level
        return hf
    return getattr(hf, "base_model", hf)


def num_heads(config: Any, stack: str | None = None) -> int | None:
    """Attention heads per layer of ``stack`` (the head stack if None); None when the config does not say."""
    fam = family_of(config)
    stack = stack or ("decoder" if "decoder" in fam.heads else "encoder")
    for key in fam.heads.get(stack, ()):
        n = getattr(config, key, None)
        if n:
            return int(n)
    return None


def _unavailable(fam: Family, config: Any) -> dict[str, str]:
    """site -> why it cannot be captured on this configuration (one clause)."""
    out = {}
    if fam.name == "falcon" and getattr(config, "alibi", False):
        out["attn.probs"] = "Falcon with alibi=true runs an ALiBi bias inside SDPA that guidetune does not rebuild"
    impl = str(getattr(config, "_attn_implementation", None) or "")
    if fam.attention in ("dropout", "bert", "distilbert", "falcon") and impl.startswith("flash"):
        out["attn.probs"] = (f"{fam.name} under {impl} never forms the probabilities; load it with "
                             "attn_implementation sdpa or eager")
    if fam.attention == "dropout" and impl == "sdpa" and fam.name == "gptj":
        out["attn.probs"] = "gptj under sdpa never forms the probabilities; load it with attn_implementation eager"
    return out


@dataclass(frozen=True)
class LayerScheme:
    """Canonical names for one model: its family, layer counts (and expert count for MoE)."""

    family: Family
    counts: dict[str, int]
    experts: int = 0
    unavailable: dict[str, str] = field(default_factory=dict)  # site -> reason it cannot be captured here
    model_type: str = ""

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
        return cls._with(fam, counts, config)

    @classmethod
    def _with(cls, fam: Family, counts: dict[str, int], config: Any) -> "LayerScheme":
        experts = int(getattr(config, fam.experts_key, 0) or 0) if fam.experts_key else 0
        return cls(fam, counts, experts, _unavailable(fam, config), str(getattr(config, "model_type", "")))

    @classmethod
    def from_model(cls, model: nn.Module) -> "LayerScheme":
        hf = unwrap(model)
        fam = family_of(hf.config)
        if fam.shared_layers:
            return cls.from_config(hf.config)
        base = base_of(model)
        counts = {}
        for stack, path in fam.stacks.items():
            try:
                counts[stack] = len(base.get_submodule(path))
            except AttributeError:
                continue  # e.g. T5EncoderModel has no decoder
        return cls._with(fam, counts, hf.config)

    def sites(self, stack: str) -> list[str]:
        """The site names of one block of ``stack`` (expert sites expanded), minus unavailable ones."""
        out = []
        for site in self.family.sites[stack]:
            if site in self.unavailable:
                continue
            out += [site.format(e=e) for e in range(self.experts)] if "{e}" in site else [site]
        return out

    def names(self) -> list[str]:
        """Every canonical name, in model order."""
        out = []
        for stack, n in self.counts.items():
            sites = self.sites(stack)
            for i in range(n):
                out += [f"{stack}.layers.{i}.{site}" for site in sites]
        return out

    def site_spec(self, stack: str, site: str) -> tuple[Site, int | None]:
        """The table entry of a (possibly expert-indexed) site, and the expert index."""
        m = re.fullmatch(r"(.*)\.experts\.(\d+)\.(.*)", site)
        if m and self.experts:
            return self.family.sites[stack][f"{m.group(1)}.experts.{{e}}.{m.group(3)}"], int(m.group(2))
        return self.family.sites[stack][site], None

    def alias_index(self, stack: str, alias: str) -> int:
        n = self.counts[stack]
        return {"first": 0, "middle": n // 2, "final": n - 1}[alias]

    def summary(self) -> str:
        parts = []
        for stack, n in self.counts.items():
            sites = ", ".join(s for s in self.family.sites[stack] if s not in self.unavailable)
            parts.append(
                f"{stack}.layers.{{0..{n - 1}}}.{{{sites}}}; aliases {stack}.first/middle/final"
                f" (= layers 0/{n // 2}/{n - 1}); globs such as {stack}.layers.*."
                f"{'ffn.experts.*.act' if self.experts else 'ffn.act'}"
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
            elif (m := _NAME.match(name)) and m.group("site") == "ffn.act" and self.experts:
                raise GuidetuneError(
                    f"ffn.act does not exist in {self.model_type} (mixture of {self.experts} experts): use "
                    f"{m.group('stack')}.layers.{m.group('idx')}.ffn.experts.{{0..{self.experts - 1}}}.act (an "
                    f"expert's intermediate, for the tokens routed to it), ffn.experts.*.act, or ffn.router")
            elif (m := _NAME.match(name)) and m.group("site") in self.unavailable:
                site = m.group("site")
                available = ", ".join(s for s in self.family.sites[m.group("stack")] if s not in self.unavailable)
                raise GuidetuneError(f"{site} is not available for {self.model_type or self.family.name}: "
                                     f"{self.unavailable[site]}. Available sites: {available}")
            else:
                aliases = [f"{st}.{a}" for st in self.counts for a in ALIASES] + list(ALIASES)
                hint = did_you_mean(raw, aliases + known).split(" Available")[0]
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
    call: int | None = None  # shared layers (ALBERT): which call of ``module`` in one forward is this layer
    expert: int | None = None  # MoE sites: the expert index
    copy: bool = False  # keep a copy: the model changes the tensor in place later
    flat: bool = False  # the module runs on [batch * seq, dim]; captures view it as [batch, seq, dim]


def _block(base: nn.Module, scheme: LayerScheme, stack: str, idx: int) -> tuple[nn.Module, int | None]:
    """The module of block ``idx`` and, for shared layers, which call of it that block is."""
    blocks = base.get_submodule(scheme.family.stacks[stack])
    if not scheme.family.shared_layers:
        return blocks[idx], None
    # ALBERT: layer i runs group int(i / (n / groups)), whose one inner layer is called once per layer of the group
    n, groups = scheme.counts[stack], len(blocks)
    group = int(idx / (n / groups))
    inner = blocks[group].albert_layers
    if len(inner) != 1:
        raise GuidetuneError(f"albert with inner_group_num={len(inner)} has no per-layer table; "
                             "layer names need inner_group_num 1")
    first = min(i for i in range(n) if int(i / (n / groups)) == group)
    return inner[0], idx - first


def resolve(model: nn.Module, names: list[str] | str) -> list[Resolved]:
    """Resolve names (aliases/globs allowed) to modules of ``model`` (wrapped or not)."""
    scheme = LayerScheme.from_model(model)
    base = base_of(model)
    out = []
    for name in scheme.expand(names):
        stack, idx, site = scheme.parse(name)
        block, call = _block(base, scheme, stack, idx)
        spec, expert = scheme.site_spec(stack, site)
        path = spec.path.format(e=expert) if expert is not None else spec.path
        module = block.get_submodule(path) if path else block
        out.append(Resolved(name, stack, idx, site, module, spec.hook, scheme.family, call, expert, spec.copy,
                            spec.flat))
    return out


def module_paths(model: nn.Module) -> dict[int, str]:
    """id(module) -> its dotted path in ``model`` as given (with wrappers), for display."""
    return {id(m): n for n, m in model.named_modules()}
