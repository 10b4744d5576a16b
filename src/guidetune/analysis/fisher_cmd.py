"""``guidetune fisher MODEL --data FILE --objective OBJ [--fraction F | --max-samples N] --out fisher.safetensors``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import GuidetuneError
from ..runs import atomic_write
from .common import save_fig
from .fisher_estimate import (OBJECTIVES, count_for, estimate, layer_groups, load_samples, reliability, save,
                              subsample_order)


def check_head(model_name: str, objective: str, trust_remote_code: bool = False):
    """The model spec for ``objective``; fails first (before reading data) when the model lacks the head."""
    from ..config import ModelSpec
    from ..models import available_heads, load_config_only

    if objective not in OBJECTIVES:
        raise GuidetuneError(f"--objective: got '{objective}', allowed: {', '.join(OBJECTIVES)}")
    spec = ModelSpec(name=model_name, head=OBJECTIVES[objective], trust_remote_code=trust_remote_code)
    config = load_config_only(spec)
    heads = available_heads(config)
    if spec.head not in heads:
        raise GuidetuneError(f"--objective: '{objective}' needs a {spec.head} head, which this "
                             f"{config.model_type} model has no class for; it has: {', '.join(heads)}")
    return spec


def load_for_objective(model_name: str, objective: str, labels: list[str] | None, trust_remote_code: bool = False):
    from ..models import load_model

    spec = check_head(model_name, objective, trust_remote_code)
    model, tok = load_model(spec, num_labels=len(labels) if labels else None)
    if objective == "mlm" and tok.mask_token_id is None:
        raise GuidetuneError("--objective mlm: the tokenizer has no mask token")
    return model, tok


def run_fisher(a) -> dict:
    from ..config import ModelSpec
    from ..models import load_tokenizer

    check_head(a.model, a.objective, a.trust_remote_code)
    tok = load_tokenizer(ModelSpec(name=a.model))
    samples, labels = load_samples(a.data, a.objective, tok, a.max_length, a.text_field, a.label_field)
    if not samples:
        raise GuidetuneError(f"--data: '{a.data}' holds no samples")
    model, tok = load_for_objective(a.model, a.objective, labels, a.trust_remote_code)
    order = subsample_order(len(samples), a.seed)
    n = count_for(len(samples), a.fraction, a.max_samples)
    fracs = [float(x) for x in a.reliability.split(",")] if a.reliability else []
    snaps = sorted({count_for(len(samples), f, None) for f in fracs} | {n})
    picked = [samples[i] for i in order[: max(snaps)]]
    estimates = estimate(model, tok, picked, a.objective, a.batch_size, a.seed, snaps)
    fisher = estimates[n]
    meta = {"model": a.model, "objective": a.objective, "n": n, "seed": a.seed, "data": a.data,
            "model_type": model.config.model_type}
    out = save(a.out, model, fisher, meta)
    result = {"out": str(out), "n": n}
    if a.plot:
        result["plot"] = str(plot_layers(model, fisher, Path(a.out).with_suffix(".png"), meta))
    if fracs:
        ref = count_for(len(samples), a.reference, None) if a.reference else max(snaps)
        if ref not in estimates:
            raise GuidetuneError(f"--reference {a.reference} must be one of the --reliability fractions or --fraction")
        rows = reliability(estimates, ref, model)
        result["reliability"] = rows
        write_reliability(Path(a.out).with_name(Path(a.out).stem + "_reliability"), rows, ref, len(samples))
    return result


def write_reliability(stem: Path, rows: list[dict], ref: int, total: int) -> None:
    cols = list(rows[0]) if rows else []
    md = [f"Reference: {ref} of {total} samples.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |" for r in rows]
    atomic_write(stem.with_suffix(".md"), "\n".join(md) + "\n")
    atomic_write(stem.with_suffix(".json"), json.dumps({"reference_samples": ref, "rows": rows}, indent=1))


def plot_layers(model, fisher, path: Path, meta: dict) -> Path:
    """Box plot of log10 Fisher per transformer block (plus embeddings and head)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = layer_groups(model)
    data, labels = [], []
    for g, names in groups.items():
        vals = np.concatenate([fisher[n].flatten().numpy() for n in names])
        vals = vals[vals > 0]
        if vals.size > 20000:
            vals = np.random.default_rng(0).choice(vals, 20000, replace=False)
        data.append(np.log10(vals) if vals.size else np.array([np.nan]))
        labels.append(g.replace(".layers.", " "))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels)), 4))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("log10 Fisher (per parameter)")
    ax.set_title(f"{meta['model']}: {meta['objective']}, N = {meta['n']}", fontsize=9)
    return save_fig(fig, path)
