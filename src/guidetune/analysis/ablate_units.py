"""Which units ``guidetune analyze ablate --units SPEC`` knocks out, by canonical layer name.

    encoder.layers.3.ffn.act:12,45,1007      neurons of an FFN activation layer
    encoder.middle.ffn.act@runs/neurons:top10:STEM
    @runs/neurons/top_STEM.csv:top10          top-k neurons of an ``analyze neurons`` output (directory,
                                              top_<concept>.csv or neurons_<model>.csv; the layer is read
                                              from the summary.json beside it unless given before the @)
    decoder.layers.2.attn:0,1                 heads of a self-attention layer
    @runs/guided-s0:guided                    the heads a run's attention_guidance terms guided
    encoder.layers.3  /  encoder.layers.3:0,5 a block's output: all of it, or some hidden features

Several specs are joined with ``;``. Heads are cut at the input of the attention output projection
(the ``attn.out`` module's input, split into heads), so a head's whole contribution goes through the unit.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import GuidetuneError, did_you_mean
from ..layers.names import LayerScheme, num_heads, resolve, unwrap

_BLOCK = re.compile(r"^(encoder|decoder)\.layers\.\d+\.out$")
KINDS = {"neurons": "neuron", "heads": "head", "dims": "feature"}


@dataclass
class UnitSet:
    """Units of one layer: where the tensor is hooked and which of its units are replaced."""

    layer: str  # canonical: X.ffn.act (neurons), X.attn (heads), X.out (block output features)
    kind: str  # neurons | heads | dims
    units: list[int] | None  # None: every unit (a whole block output)
    module: nn.Module
    where: str  # "input" (forward pre-hook) or "output" (forward hook) of ``module``
    call: int | None = None  # shared layers (ALBERT): which call of the module in one forward
    width: int = 0  # neurons, heads or features of the layer
    head_dim: int | None = None

    @property
    def count(self) -> int:
        return self.width if self.units is None else len(self.units)

    def describe(self) -> str:
        what = "all features" if self.units is None else f"{KINDS[self.kind]}s {','.join(map(str, self.units))}"
        return f"{self.layer}: {what}"


def _ints(text: str, spec: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GuidetuneError(f"--units: '{spec}': unit indices must be comma-separated integers such as 0,5,12") from None
    if not out:
        raise GuidetuneError(f"--units: '{spec}': give at least one unit index after ':'")
    return out


def _layer_set(model, scheme: LayerScheme, name: str, units: list[int] | None, spec: str) -> UnitSet:
    if name.endswith(".attn"):
        canon = scheme.expand(name + ".out")
        r = resolve(model, canon)[0]
        # heads live in the input of the output projection, whatever the site's own hook is
        return UnitSet(canon[0][: -len(".out")], "heads", units, r.module, "input", r.call)
    try:
        canon = scheme.expand(name)
    except GuidetuneError as e:
        raise GuidetuneError(f"--units: {e}") from None
    if len(canon) != 1:
        raise GuidetuneError(f"--units: '{name}' names {len(canon)} layers; give one layer per spec (join specs with ';')")
    r = resolve(model, canon)[0]
    if canon[0].endswith(".ffn.act"):
        return UnitSet(canon[0], "neurons", units, r.module, r.hook, r.call)
    if _BLOCK.match(canon[0]):
        return UnitSet(canon[0], "dims", units, r.module, r.hook, r.call)
    raise GuidetuneError(f"--units: '{spec}' names a {r.site} layer; ablation units are the neurons of a *.ffn.act "
                         f"layer, the heads of a *.attn layer (e.g. {canon[0].rsplit('.layers.', 1)[0]}.layers."
                         f"{r.layer}.attn:0,1) or a block's output ({canon[0].split('.layers.')[0]}.layers.{r.layer})")


def _summary_layer(path: Path) -> str | None:
    f = (path if path.is_dir() else path.parent) / "summary.json"
    if not f.exists():
        return None
    models = json.loads(f.read_text()).get("models", {})
    return next(iter(models.values()), {}).get("layer") if models else None


def _summary_sentences(path: Path) -> int:
    f = path.parent / "summary.json"
    models = json.loads(f.read_text()).get("models", {}) if f.exists() else {}
    return int(next(iter(models.values()), {}).get("sentences", 0)) if models else 0


def _summary_models(path: Path) -> list[str]:
    f = path / "summary.json"
    return list(json.loads(f.read_text()).get("models", {})) if f.exists() else []


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def neuron_file_units(path_text: str, k: int, concept: str | None, spec: str) -> tuple[list[int], str | None]:
    """(top-k neuron ids, layer from the analysis summary or None) from an ``analyze neurons`` output."""
    path = Path(path_text)
    if not path.exists():
        raise GuidetuneError(f"--units: '{spec}': no such file or directory '{path_text}'")
    layer = _summary_layer(path)
    if path.is_dir():
        if concept is None:
            raise GuidetuneError(f"--units: '{spec}': name the concept, e.g. @{path_text}:top10:STEM")
        top = path / f"top_{concept}.csv"
        known = [p.stem[4:] for p in path.glob("top_*.csv")]
        if known and concept not in known:
            raise GuidetuneError(f"--units: '{spec}': no concept '{concept}' in {path_text}.{did_you_mean(concept, known)}")
        per_neuron = [path / f"neurons_{_safe(m)}.csv" for m in _summary_models(path)] or sorted(path.glob("neurons_*.csv"))
        if top.exists() and len(_read_csv(top)) >= k:
            path = top
        elif per_neuron and per_neuron[0].exists():
            path = per_neuron[0]
        else:
            raise GuidetuneError(f"--units: '{spec}': {path_text} holds no neuron table (top_{concept}.csv or "
                                 "neurons_<model>.csv); is it an analyze neurons output?")
    rows = _read_csv(path)
    if rows and "neuron" in rows[0] and f"{concept}_kt" in rows[0]:  # neurons_<model>.csv: rank all neurons
        kt, rec = f"{concept}_kt", f"{concept}_recall"
        sentences = _summary_sentences(path)  # analyze neurons ranks neurons firing on >= 3 sentences
        alive = [r for r in rows if round(float(r.get("sentence_rate", 1)) * sentences) >= 3] if sentences else rows
        alive.sort(key=lambda r: (-float(r[kt]), -float(r[rec]), int(r["neuron"])))
        ids = [int(r["neuron"]) for r in alive[:k]]
    elif rows and "neuron" in rows[0] and "KT" not in rows[0]:
        if concept is not None and path.name.startswith("top_") and path.stem[4:] != concept:
            raise GuidetuneError(f"--units: '{spec}': {path.name} holds concept '{path.stem[4:]}', not '{concept}'")
        if concept is None and not path.name.startswith("top_"):
            cols = [c[:-3] for c in rows[0] if c.endswith("_kt")]
            raise GuidetuneError(f"--units: '{spec}': name the concept ({', '.join(cols)}), e.g. :top{k}:{cols[0] if cols else 'STEM'}")
        ids = [int(r["neuron"]) for r in rows[:k]]
        if len(ids) < k:
            raise GuidetuneError(f"--units: '{spec}': {path.name} lists {len(ids)} neurons, fewer than top{k}; "
                                 "use the neurons_<model>.csv beside it, or rerun analyze neurons with a larger --top-k")
    else:
        cols = [c[:-3] for c in (rows[0] if rows else {}) if c.endswith("_kt")]
        raise GuidetuneError(f"--units: '{spec}': {path.name} is not a neuron table of this concept"
                             + (f".{did_you_mean(str(concept), cols)}" if cols else " (no 'neuron' column)"))
    return ids, layer


def guided_heads(run: str, spec: str) -> list[tuple[str, list[int]]]:
    """(attention layer name, heads) of every attention_guidance term in a run's config."""
    import yaml

    cfg = Path(run) / "config.yaml"
    if not cfg.exists():
        raise GuidetuneError(f"--units: '{spec}': '{run}' is not a run directory (no config.yaml)")
    regs = [r for r in (yaml.safe_load(cfg.read_text()) or {}).get("regularizers", []) or []
            if isinstance(r, dict) and r.get("name") == "attention_guidance"]
    if not regs:
        raise GuidetuneError(f"--units: '{spec}': run '{run}' has no attention_guidance term, so no guided heads")
    out = []
    for r in regs:
        for layer in r.get("layers", ["final"]):
            out.append((layer, list(r.get("heads", [0]))))
    return out


def parse_units(model, spec_text: str) -> list[UnitSet]:
    """Unit sets of ``spec_text`` (specs joined by ';'), widths filled in and indices checked."""
    scheme = LayerScheme.from_model(model)
    sets: list[UnitSet] = []
    for spec in [s.strip() for s in spec_text.split(";") if s.strip()]:
        if "@" in spec:
            layer, ref = spec.split("@", 1)
            m = re.fullmatch(r"(.+?):guided", ref)
            if m and not layer:
                for name, heads in guided_heads(m.group(1), spec):
                    names = scheme.expand(name if name.endswith("probs") else f"{name}.attn.probs")
                    for n in names:
                        if not n.endswith(".attn.probs"):
                            raise GuidetuneError(f"--units: '{spec}': {n} is cross-attention; only self-attention "
                                                 "heads can be ablated")
                        sets.append(_layer_set(model, scheme, n[: -len(".probs")], heads, spec))
                continue
            m = re.fullmatch(r"(.+?):top(\d+)(?::(.+))?", ref)
            if not m:
                raise GuidetuneError(f"--units: '{spec}': expected @FILE:topK[:CONCEPT] or @RUN:guided")
            ids, found = neuron_file_units(m.group(1), int(m.group(2)), m.group(3), spec)
            if not (layer or found):
                raise GuidetuneError(f"--units: '{spec}': no summary.json beside {m.group(1)} names the layer; "
                                     "give it before the @ (e.g. encoder.layers.3.ffn.act@...)")
            sets.append(_layer_set(model, scheme, layer or found, ids, spec))
            if not sets[-1].layer.endswith(".ffn.act"):
                raise GuidetuneError(f"--units: '{spec}': neuron tables need an *.ffn.act layer, got {sets[-1].layer}")
            continue
        name, _, idx = spec.partition(":")
        sets.append(_layer_set(model, scheme, name.strip(), _ints(idx, spec) if idx else None, spec))
        if sets[-1].units is None and sets[-1].kind != "dims":
            raise GuidetuneError(f"--units: '{spec}': name the {KINDS[sets[-1].kind]}s after ':', e.g. {name}:0,1")
    if not sets:
        raise GuidetuneError("--units: give at least one unit spec, e.g. encoder.layers.3.ffn.act:12,45")
    _fill_widths(model, sets)
    for s in sets:
        bad = [u for u in (s.units or []) if not 0 <= u < s.width]
        if bad:
            noun = KINDS[s.kind]
            raise GuidetuneError(f"--units: {noun} {bad[0]} is past {s.layer}'s {s.width} {noun}s (0-{s.width - 1})")
    return sets


def _fill_widths(model, sets: list[UnitSet]) -> None:
    """Widths from one short forward pass (every family, whatever its module types)."""
    from .ablate import attach, forward

    seen: dict[int, int] = {}

    def record(s: UnitSet):
        def fn(x: torch.Tensor) -> torch.Tensor:
            seen[id(s)] = x.shape[-1]
            return x
        return fn

    ids = torch.tensor([[1, 2, 3]], device=next(model.parameters()).device)
    with attach(model, [(s, record(s)) for s in sets]):
        forward(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    for s in sets:
        width = seen.get(id(s))
        if width is None:
            raise GuidetuneError(f"--units: {s.layer} did not run in a forward pass of this model")
        if s.kind == "heads":
            stack = s.layer.split(".")[0]
            h = num_heads(unwrap(model).config, stack)
            if not h or width % h:
                raise GuidetuneError(f"--units: cannot split {s.layer}'s {width} features into heads "
                                     f"(config says {h} heads)")
            s.width, s.head_dim = h, width // h
        else:
            s.width = width
