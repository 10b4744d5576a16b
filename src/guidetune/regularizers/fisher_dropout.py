"""Dropout schedules: ``fisher_dropout`` (seed eq. 9-10), and the baselines ``dropout`` and ``gaussian_dropout``.

These plug-ins change the model's dropout at setup and add no term and no work to the training step
(their ``loss`` returns None). A *dropout site* is a ``torch.nn.Dropout`` module of the model (in LoRA
mode also each LoRA layer's dropout); its Fisher score is the mean empirical Fisher of the parameters
of the module it sits in (its parent: e.g. BERT's ``attention.self`` for the attention-probability
dropout, ``output`` for the FFN output dropout); a dropout directly under the bare model (embeddings
dropout in GPT-2/T5) is scored by the embedding parameters.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..layers.names import base_of, unwrap
from ..spec import check, finish
from .base import REGULARIZERS

log = logging.getLogger(__name__)


def dropout_sites(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(path, dropout module, module whose parameters score it), in model order; LoRA dropouts included."""
    root = model
    hf = unwrap(model)
    base = base_of(model)
    named = dict(root.named_modules())
    out = []
    for path, m in named.items():
        if not isinstance(m, (nn.Dropout, GaussianDropout)):
            continue
        parent_path = path.rsplit(".", 1)[0] if "." in path else ""
        parent = named.get(parent_path, root)
        if ".lora_dropout" in path:  # peft: model...query.lora_dropout.default -> the wrapped base layer
            owner = named[path.split(".lora_dropout")[0]]
            parent = getattr(owner, "base_layer", owner)
        elif parent is base or parent is hf or parent is root:
            parent = hf.get_input_embeddings()
        out.append((path, m, parent))
    return out


def dropout_scores(model: nn.Module, fisher: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean Fisher of each dropout site's scoring module (parameters matched by name)."""
    from ..fisher_files import original_name

    hf = unwrap(model)
    name_of = {id(p): original_name(n) for n, p in hf.named_parameters()}
    scores = {}
    for path, _, parent in dropout_sites(model):
        vals = [fisher[name_of[id(p)]] for p in parent.parameters() if name_of.get(id(p)) in fisher]
        if vals:
            total = sum(float(v.sum()) for v in vals)
            scores[path] = total / sum(v.numel() for v in vals)
    return scores


def set_p(path: str, module: nn.Module, parent_of: dict, p: float) -> None:
    module.p = p
    parent = parent_of.get(path)
    if parent is not None and isinstance(getattr(parent, "dropout_prob", None), float):
        parent.dropout_prob = p  # BERT's SDPA attention reads this float, not the module


def _parents(model) -> dict:
    named = dict(model.named_modules())
    return {path: named.get(path.rsplit(".", 1)[0]) for path in named if "." in path}


def linear_schedule(scores: dict[str, float], p_min: float, p_max: float) -> dict[str, float]:
    """Most informative site -> p_min, least -> p_max, linearly in rank (ties keep model order)."""
    ranked = sorted(scores, key=lambda k: -scores[k])
    n = len(ranked)
    return {k: p_min + (p_max - p_min) * (i / (n - 1) if n > 1 else 0.0) for i, k in enumerate(ranked)}


class _Schedule:
    """Shared behaviour of the schedule plug-ins: no captures, no loss, a printed and saved schedule."""

    captured: list = []
    schedule_kind = True

    def loss(self, captures, batch):
        return None

    def report(self) -> str:
        lines = [f"dropout schedule ({self.registry_name}): {len(self.schedule)} sites"]
        lines += [f"  p={p:.4f}  {site}" for site, p in self.schedule.items()]
        return "\n".join(lines)

    def save(self, path) -> None:
        from ..runs import atomic_write

        atomic_write(path, json.dumps({"plugin": self.registry_name, "schedule": self.schedule,
                                       "scores": getattr(self, "scores", {})}, indent=1))


def _check_p(e: list[str], name: str, p: float) -> None:
    check(e, 0 <= p < 1, f"{name}: must be in [0, 1), got {p}")


@REGULARIZERS.register("fisher_dropout")
@dataclass
class FisherDropout(_Schedule):
    """Dropout by Fisher rank: the most informative layer gets p_min, the least p_max (seed eq. 9-10)."""

    fisher: str = field(default="", metadata={"help": "a fisher.safetensors of this model (guidetune fisher)"})
    p_min: float = field(default=0.0, metadata={"help": "dropout of the most informative site"})
    p_max: float = field(default=0.1, metadata={"help": "dropout of the least informative site"})

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.fisher), "fisher: give a Fisher file (guidetune fisher MODEL ... --out F)")
        _check_p(e, "p_min", self.p_min)
        _check_p(e, "p_max", self.p_max)
        check(e, self.p_min <= self.p_max, f"p_min: must be <= p_max, got p_min={self.p_min} > p_max={self.p_max}")
        finish(e)
        self.schedule: dict[str, float] = {}

    def setup(self, model, tokenizer) -> None:
        from ..fisher_files import load

        fisher, _ = load(self.fisher, model)
        self.scores = dropout_scores(model, fisher)
        self.schedule = linear_schedule(self.scores, self.p_min, self.p_max)
        parents = _parents(model)
        for path, m, _ in dropout_sites(model):
            if path in self.schedule:
                set_p(path, m, parents, self.schedule[path])
        log.info(self.report())


@REGULARIZERS.register("dropout")
@dataclass
class UniformDropout(_Schedule):
    """Every dropout site at the same p (the usual baseline)."""

    p: float = field(default=0.1, metadata={"help": "dropout probability of every site"})

    def __post_init__(self):
        e: list[str] = []
        _check_p(e, "p", self.p)
        finish(e)
        self.schedule: dict[str, float] = {}

    def setup(self, model, tokenizer) -> None:
        parents = _parents(model)
        for path, m, _ in dropout_sites(model):
            set_p(path, m, parents, self.p)
            self.schedule[path] = self.p
        log.info(self.report())


class GaussianDropout(nn.Module):
    """Multiplicative Gaussian noise x * N(1, p / (1 - p)) in training (Wang & Manning 2013); identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (1 + torch.randn_like(x) * (self.p / (1 - self.p)) ** 0.5)


@REGULARIZERS.register("gaussian_dropout")
@dataclass
class GaussianDropoutPlugin(_Schedule):
    """Replace every dropout module by multiplicative Gaussian noise of the same variance (Wang & Manning).

    Attention-probability dropout inside a fused SDPA kernel is not a module; it is switched off here
    (use ``model.attn_implementation: eager`` to have it replaced too).
    """

    p: float = field(default=0.1, metadata={"help": "equivalent dropout rate: noise variance p / (1 - p)"})

    def __post_init__(self):
        e: list[str] = []
        _check_p(e, "p", self.p)
        finish(e)
        self.schedule: dict[str, float] = {}

    def setup(self, model, tokenizer) -> None:
        named = dict(model.named_modules())
        for path, m, _ in dropout_sites(model):
            parent_path, attr = path.rsplit(".", 1) if "." in path else ("", path)
            parent = named[parent_path]  # "" is the model itself
            noise = GaussianDropout(self.p)
            if isinstance(parent, nn.ModuleDict):
                parent[attr] = noise
            else:
                setattr(parent, attr, noise)
            if isinstance(getattr(parent, "dropout_prob", None), float):
                parent.dropout_prob = 0.0
            self.schedule[path] = self.p
        log.info(self.report())
