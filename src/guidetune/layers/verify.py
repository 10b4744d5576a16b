"""``guidetune ls layers MODEL --verify``: a structural self-check of the layer table on one short input.

The input (batch 2, lengths 7 and 4, so padding is exercised) runs twice:

1. with the model's own attention implementation (SDPA, flash, ...) under a :class:`Capture` of every
   canonical name -- exactly what training sees;
2. with eager attention and ``output_attentions`` / ``output_hidden_states``, plus plain forward hooks
   on the modules the table names.

Then every canonical tensor that has an independent reference is compared:

* ``out`` of block ``i`` with the model's ``hidden_states[i + 1]`` (for the last block, after the stack's
  final norm where the model applies it to the last hidden state);
* ``attn.probs`` / ``cross_attn.probs`` with the eager attention probabilities (rows of padding queries
  left out: they are not meaningful);
* ``ffn.act`` with its module's input in pass 2, and the FFN's output projection (the ``ffn.out``
  module) applied to the captured ``ffn.act`` with ``ffn.out`` -- a table pointing ``ffn.act`` at another
  module fails here;
* ``attn.out`` and the MoE sites with their pass-2 module outputs/inputs.

A wrong table (a path to the wrong module, a missing rotary embedding or q/k norm, a wrong scale or
mask) shows up as FAIL with the largest absolute difference.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .capture import Capture
from .names import LayerScheme, base_of, resolve, unwrap

TOL = 1e-4


@dataclass
class Check:
    name: str
    reference: str
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOL


def _inputs(model, scheme: LayerScheme) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    ids = ids.masked_fill(mask == 0, int(getattr(unwrap(model).config, "pad_token_id", 0) or 0))
    inputs = {"input_ids": ids, "attention_mask": mask}
    if scheme.family.encoder_decoder and "decoder" in scheme.counts:
        inputs["decoder_input_ids"] = torch.randint(1000, 2000, (2, 5), generator=g)
    return inputs


@contextlib.contextmanager
def _eager(model, interface: bool):
    hf = unwrap(model)
    before = hf.config._attn_implementation
    if before == "eager" or not interface:
        # models outside the attention interface fall back to eager code by themselves under output_attentions
        yield
        return
    hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf.set_attn_implementation(before)


def _first(o, copy: bool) -> torch.Tensor:
    """A module's main output; with output_attentions some blocks (DistilBERT) put the weights first."""
    if isinstance(o, tuple):
        o = next((t for t in o if isinstance(t, torch.Tensor) and t.dim() == 3), o[0])
    return o.clone() if copy else o


def _reference(model, scheme, inputs):
    """Pass 2: eager attention, hidden states, attentions, and plain hooks on the table's modules."""
    resolved = [r for r in resolve(model, scheme.names()) if r.hook != "attention"]
    seen: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    handles = []

    def keep(r, t):
        n = calls.get(r.name, 0)
        calls[r.name] = n + 1
        if r.call is None or n == r.call:
            seen[r.name] = t.view(inputs["input_ids"].shape[0], -1, t.shape[-1]) if r.flat and t.dim() == 2 else t

    for r in resolved:
        if r.hook == "input":
            handles.append(r.module.register_forward_pre_hook(lambda m, a, r=r: keep(r, a[0])))
        else:
            handles.append(r.module.register_forward_hook(lambda m, a, o, r=r: keep(r, _first(o, r.copy))))
    try:
        with _eager(model, scheme.family.attention == "interface"):
            out = model(**inputs, output_attentions=True, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out, seen


_NORMS = ("norm", "final_layer_norm", "final_layernorm", "ln_f", "layer_norm")


def _final_norms(model, scheme: LayerScheme, stack: str) -> list:
    """Norm modules next to ``stack``'s block list (LLaMA's ``norm``, T5's ``final_layer_norm``, ...)."""
    path = scheme.family.stacks[stack].rsplit(".", 1)
    parent = base_of(model).get_submodule(path[0]) if len(path) == 2 else base_of(model)
    return [getattr(parent, n) for n in _NORMS if isinstance(getattr(parent, n, None), torch.nn.Module)]


def _hidden(out, stack: str, encoder_decoder: bool):
    if encoder_decoder:
        return out.encoder_hidden_states if stack == "encoder" else out.decoder_hidden_states
    return out.hidden_states


def _attentions(out, stack: str, site: str, encoder_decoder: bool):
    if not encoder_decoder:
        return out.attentions
    if site == "cross_attn.probs":
        return out.cross_attentions
    return out.encoder_attentions if stack == "encoder" else out.decoder_attentions


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


@torch.no_grad()
def verify(model) -> list[Check]:
    """Compare every canonical tensor that has a reference (see module docstring); one Check each."""
    scheme = LayerScheme.from_model(model)
    inputs = _inputs(model, scheme)
    names = scheme.names()
    was_training = model.training
    model.eval()
    try:
        cap = Capture(model, names, detach=True)
        with cap as own:
            model(**inputs)
        ref, seen = _reference(model, scheme, inputs)
    finally:
        model.train(was_training)
    enc_dec = scheme.family.encoder_decoder
    modules = {r.name: r.module for r in cap.resolved}
    checks: list[Check] = []
    for r in cap.resolved:
        if r.name not in own:
            if r.name in seen or r.hook == "attention":  # it ran, yet the capture missed it
                checks.append(Check(r.name, "captured", float("inf")))
            continue  # e.g. an expert no token was routed to
        t = own[r.name]
        n_layers = scheme.counts[r.stack]
        if r.site == "out" and _hidden(ref, r.stack, enc_dec) is not None:
            hidden = _hidden(ref, r.stack, enc_dec)[r.layer + 1]
            label, diff = f"hidden_states[{r.layer + 1}]", _diff(t, hidden)
            if r.layer == n_layers - 1:  # many models put their final norm on the last hidden state
                for norm in _final_norms(model, scheme, r.stack):
                    if _diff(norm(t), hidden) < diff:
                        label, diff = f"{label} after the final norm", _diff(norm(t), hidden)
            checks.append(Check(r.name, label, diff))
        elif r.site.endswith("probs"):
            eager = _attentions(ref, r.stack, r.site, enc_dec)
            if eager is None or eager[r.layer] is None:
                continue
            rows = own.token_mask(r.name)[:, None, :, None]  # padding queries are not meaningful
            checks.append(Check(r.name, "eager attentions", _diff(t * rows, eager[r.layer].float() * rows)))
        elif r.name in seen:
            kind = "input" if r.hook == "input" else "output"
            checks.append(Check(r.name, f"eager {kind} of the module", _diff(t, seen[r.name])))
            if r.site == "ffn.act" and r.name.replace("ffn.act", "ffn.out") in own:
                out_name = r.name.replace("ffn.act", "ffn.out")
                proj = modules[out_name]  # the FFN's output projection, applied to what ffn.act captured
                try:
                    down = proj(t)
                    down = down[0] if isinstance(down, tuple) else down
                    diff = _diff(own[out_name], down)
                except RuntimeError:  # shapes that do not fit: ffn.act is not the projection's input
                    diff = float("inf")
                checks.append(Check(r.name, "down projection of ffn.act = ffn.out", diff))
    return checks


def format_checks(checks: list[Check]) -> str:
    w1 = max([len(c.name) for c in checks] + [14])
    w2 = max([len(c.reference) for c in checks] + [9])
    lines = [f"{'canonical name':<{w1}}  {'reference':<{w2}}  {'max abs diff':>12}  result"]
    lines += [f"{c.name:<{w1}}  {c.reference:<{w2}}  {c.max_abs_diff:>12.2e}  {'OK' if c.ok else 'FAIL'}"
              for c in checks]
    bad = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - bad}/{len(checks)} checks equal within {TOL:g}" + (f"; {bad} FAIL" if bad else ""))
    return "\n".join(lines)
