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
    lines.append("layers: guidetune ls layers MODEL")
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
