"""Text for ``guidetune ls``."""
from __future__ import annotations

from .spec import describe


def _registries() -> dict:
    from .regularizers import REGULARIZERS
    from .tasks import TASKS

    from .analysis import ANALYSES

    return {"regularizers": REGULARIZERS, "tasks": TASKS, "analyses": ANALYSES}


def _first_line(obj) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""


def list_all() -> str:
    lines = []
    for kind, reg in _registries().items():
        lines.append(f"{kind}:")
        lines += [f"  {n:<22} {_first_line(reg.get(n))}" for n in reg.names()]
    lines.append("layers: guidetune ls layers MODEL [--verify]")
    lines.append("models: guidetune ls models (supported model types)")
    return "\n".join(lines)


def list_registry(kind: str) -> str:
    regs = _registries()
    if kind not in regs:
        return f"{kind}: none registered yet"
    reg = regs[kind]
    lines = []
    for n in reg.names():
        cls = reg.get(n)
        lines.append(f"{n}: {_first_line(cls)}")
        for field, typ, default, help_ in describe(cls):
            lines.append(f"    {field:<20} {typ:<28} default {default:<22} {help_}")
    return "\n".join(lines)


def list_layers(model_name: str, head: str = "encoder", trust_remote_code: bool = False) -> str:
    from .config import ModelSpec
    from .layers.inspect import layer_table
    from .models import load_model

    model, tok = load_model(ModelSpec(name=model_name, head=head, trust_remote_code=trust_remote_code))
    rows = layer_table(model, tok)
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    out = [f"{'canonical name':<{w1}}  {'module':<{w2}}  shape"]
    out += [f"{a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in rows]
    return "\n".join(out)


def verify_layers(model_name: str, head: str = "encoder", trust_remote_code: bool = False) -> tuple[str, bool]:
    """``guidetune ls layers MODEL --verify``: the check table, and whether every check is equal."""
    from .config import ModelSpec
    from .layers.verify import format_checks, verify
    from .models import load_model

    model, _ = load_model(ModelSpec(name=model_name, head=head, trust_remote_code=trust_remote_code))
    checks = verify(model)
    return format_checks(checks), all(c.ok for c in checks)


_ATTENTION = {"interface": "interface", "dropout": "own eager tensor",
              "bert": "recompute", "distilbert": "recompute", "t5": "recompute", "falcon": "recompute (not alibi)"}


def _fisher_support(kind: str) -> str:
    """The Fisher helper's own check on a tiny random model of ``kind``, if that function exists."""
    try:
        from .analysis.fisher_estimate import supported
        from .testing import tiny_model
    except ImportError:
        return "see fisher"
    try:
        ok, bad = supported(tiny_model(kind))
    except Exception as e:  # noqa: BLE001 -- a listing reports, it does not stop
        return f"error: {type(e).__name__}"
    return "yes" if ok else f"no ({len(bad)} parameters)"


def model_rows(fisher: bool = False) -> list[tuple[str, ...]]:
    """(model type, family, names, attn.probs source, Fisher, LoRA targets) for every supported type."""
    from .layers.families import FAMILIES

    rows = []
    for fam in FAMILIES:
        stacks = "+".join(fam.stacks)
        sites = "sites per expert + router" if fam.experts_key else ("shared layers" if fam.shared_layers else "")
        names = f"{stacks}{f' ({sites})' if sites else ''}"
        for kind in fam.model_types:
            rows.append((kind, fam.name, names, _ATTENTION[fam.attention],
                         _fisher_support(kind) if fisher else "see --fisher", ",".join(fam.lora_targets)))
    return rows


def list_models(fisher: bool = False) -> str:
    """``guidetune ls models``: every model type with a layer table and what it supports."""
    head = ("model type", "family", "layer names", "attn.probs", "Fisher", "LoRA targets")
    rows = [head] + model_rows(fisher)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    out.append(f"{len(rows) - 1} model types. Any other type fine-tunes normally (mode full/head/lora) but has no "
               "layer names; `guidetune ls layers MODEL --verify` checks a table against eager attention.")
    return "\n".join(out)
