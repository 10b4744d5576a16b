"""``guidetune fisher MODEL (--data FILE | --task TASK.yaml) --objective OBJ [--fraction F | --max-samples N]``.

Everything the command could refuse is checked before the model runs: ``--out``, ``--fraction``,
``--reliability``, the objective's head (and, for ``mlm``/``clm``/``seq2seq``, that the checkpoint has
that head's weights rather than a random initialisation), and every parameter's per-sample rule.

``--task`` (or ``--data`` with ``--text-pair-field``/``--fields``/``--regression``) builds the examples
through the task registry exactly as ``train`` does: GLUE directories, text pairs with token type ids,
regression targets (squared error, STS-B). Under ``torchrun``/``accelerate launch`` the samples are split
across the processes and the float64 totals all-reduced; process 0 writes.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from ..errors import GuidetuneError
from .common import save_fig
from .fisher_estimate import (OBJECTIVES, count_for, estimate, layer_groups, load_samples, reliability,
                              task_samples)
from .fisher_io import FisherSet, check_out, file_hash, save

log = logging.getLogger(__name__)
HEAD_OBJECTIVE = {"classification": "task", "seq2seq_lm": "seq2seq", "causal_lm": "clm", "mlm": "mlm"}


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


def uninitialised(model, model_name: str) -> list[str]:
    """Parameters of ``model`` that its checkpoint (safetensors) does not hold: randomly initialised."""
    from safetensors import safe_open

    from ..models import resolve_name

    d = Path(resolve_name(model_name))
    files = sorted(d.glob("*.safetensors")) if d.is_dir() else []
    if not files:
        return []  # hub id or pickled weights: nothing to read without loading them again
    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            keys.update(sf.keys())
    prefix = getattr(model, "base_model_prefix", "") + "."
    strip = lambda n: n[len(prefix):] if n.startswith(prefix) else n  # noqa: E731
    have = {strip(k) for k in keys}
    return [n for n, _ in model.named_parameters() if strip(n) not in have]


def parse_fractions(text: str | None) -> list[float]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        try:
            f = float(part)
        except ValueError:
            raise GuidetuneError(f"--reliability: '{part.strip()}' is not a number; give fractions in (0, 1] "
                                 "separated by commas, e.g. 0.1,0.25,1.0") from None
        if not 0 < f <= 1:
            raise GuidetuneError(f"--reliability: {f} is not a fraction in (0, 1]")
        out.append(f)
    return out


def parse_fields(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GuidetuneError(f"--fields: '{part}' is not NAME=COLUMN (e.g. text=sentence1,text_pair=sentence2)")
        out[key.strip()] = value.strip()
    return out


def build_task(a):
    """The task whose training split is the sample pool (``--task`` YAML, or ``--data`` as a task file)."""
    from ..config import PluginSpec, build_plugin, read_yaml
    from ..tasks import TASKS

    if a.task:
        raw = read_yaml(a.task)
        raw = raw.get("task", raw) if isinstance(raw, dict) else raw
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or "name" not in raw:
            raise GuidetuneError(f"--task: '{a.task}' must be a task mapping with a 'name' (or a config with task:)")
        raw = dict(raw)
        return build_plugin(TASKS, PluginSpec(raw.pop("name"), raw))
    params = {"train": a.data, "eval": a.data, "text_field": a.text_field, "label_field": a.label_field,
              "max_length": a.max_length, "regression": a.regression}
    if a.text_pair_field:
        params["text_pair_field"] = a.text_pair_field
    if a.fields:
        params["fields"] = parse_fields(a.fields)
    return build_plugin(TASKS, PluginSpec("classification", params))


def _uses_task(a) -> bool:
    return bool(a.task) or a.objective == "task"


def run_fisher(a) -> dict:
    from ..config import ModelSpec
    from ..devices import place
    from ..models import load_model, load_tokenizer

    out_path = check_out(a.out)
    fracs = parse_fractions(a.reliability)
    count_for(10, a.fraction, a.max_samples)  # range checks before anything is read
    if not a.data and not a.task:
        raise GuidetuneError("fisher: give --data FILE or --task TASK.yaml")
    task = build_task(a) if _uses_task(a) else None
    objective = a.objective or (HEAD_OBJECTIVE.get(task.head) if task else None)
    if objective is None:
        raise GuidetuneError(f"--objective: required with --data; allowed: {', '.join(OBJECTIVES)}")
    if task is not None and HEAD_OBJECTIVE.get(task.head) != objective:
        raise GuidetuneError(f"--objective: '{objective}' does not fit task '{type(task).__name__}' "
                             f"(head {task.head}); use --objective {HEAD_OBJECTIVE.get(task.head, 'task')}")
    spec = check_head(a.model, objective, a.trust_remote_code)
    tok = load_tokenizer(ModelSpec(name=a.model))
    samples, num_labels, problem, report = [], None, None, {}
    if task is not None:
        num_labels = task.num_labels() if objective == "task" else None
        problem = getattr(task, "problem_type", None)
    else:
        samples, _ = load_samples(a.data, objective, tok, a.max_length, a.text_field, a.label_field, report)
        if not samples:
            raise GuidetuneError(f"--data: '{a.data}' holds no samples")
        if report["truncated_samples"]:
            log.warning("--data: %d of %d samples are longer than --max-length %d tokens and were cut to it",
                        report["truncated_samples"], len(samples), a.max_length)
    import torch

    torch.manual_seed(a.seed)  # a fresh classifier is the same in every process (and every run)
    model, tok = load_model(spec, num_labels=num_labels, problem_type=problem, device_map=a.device_map)
    if task is not None:  # the model's tokenizer settings (token type ids dropped where the model takes none)
        samples = task_samples(task, tok)
        if not samples:
            raise GuidetuneError(f"--task: the training split of '{a.task or a.data}' holds no samples")
    if objective == "mlm" and tok.mask_token_id is None:
        raise GuidetuneError("--objective mlm: the tokenizer has no mask token")
    if objective != "task":
        missing = uninitialised(model, a.model)
        if missing:
            raise GuidetuneError(f"--objective {objective}: '{a.model}' has no pretrained {spec.head} head "
                                 f"({len(missing)} weights would be randomly initialised, e.g. {missing[0]}); "
                                 "use --objective task with labelled data")
    model, _ = place(model, None if a.device_map else a.device, a.dtype)
    from ..distributed import end_together, process_group

    rank, world = process_group(next(model.parameters()).device)
    return end_together(world, lambda: _estimate_and_write(a, model, tok, samples, objective, fracs, out_path,
                                                            rank, world, task, report))


def _estimate_and_write(a, model, tok, samples, objective, fracs, out_path, rank, world, task,
                        report: dict) -> dict:
    from .fisher_estimate import subsample_order

    order = subsample_order(len(samples), a.seed)
    n = count_for(len(samples), a.fraction, a.max_samples)
    snaps = sorted({count_for(len(samples), f, None) for f in fracs} | {n})
    ref = count_for(len(samples), a.reference, None) if a.reference else max(snaps)
    if fracs and ref not in snaps:
        raise GuidetuneError(f"--reference {a.reference} must be one of the --reliability fractions or --fraction")
    picked = [samples[i] for i in order[: max(snaps)]]
    estimates = estimate(model, tok, picked, objective, a.batch_size, a.seed, snaps, progress=rank == 0)
    fisher = estimates[n]
    data = a.task or a.data
    meta = {"model": a.model, "objective": objective, "n": n, "seed": a.seed, "data": data,
            "model_type": model.config.model_type, "processes": world,
            **({"truncated_samples": report["truncated_samples"], "max_length": a.max_length} if report else {})}
    result = {"out": str(out_path), "n": n, "rank": rank}
    if rank != 0:
        return result
    inputs = {**meta, "data_sha256": file_hash(data), "command": " ".join(["guidetune", *sys.argv[1:]])}
    if a.task and isinstance(getattr(task, "train", None), str):
        inputs["train_sha256"] = file_hash(task.train)
    with FisherSet(out_path, inputs) as out_set:
        save(out_path, model, fisher, meta, out_set)
        if a.plot:
            result["plot"] = str(plot_layers(model, fisher, out_path.with_suffix(".png"), meta, out_set))
        if fracs:
            rows = reliability(estimates, ref, model)
            result["reliability"] = rows
            write_reliability(out_path.with_name(out_path.stem + "_reliability"), rows, ref, len(samples), out_set)
    return result


def write_reliability(stem: Path, rows: list[dict], ref: int, total: int, out_set: FisherSet) -> None:
    cols = list(rows[0]) if rows else []
    md = [f"Reference: {ref} of {total} samples.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |" for r in rows]
    out_set.write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    out_set.write_text(stem.with_suffix(".json"), json.dumps({"reference_samples": ref, "rows": rows}, indent=1))


def plot_layers(model, fisher, path: Path, meta: dict, out_set: FisherSet) -> Path:
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
    ax.set_xlabel("parameter group (transformer block)")
    ax.set_ylabel("log10 Fisher per parameter (squared log-likelihood gradient)")
    ax.set_title(f"{meta['model']}: {meta['objective']}, N = {meta['n']}", fontsize=9)
    save_fig(fig, out_set.tmp_for(path))
    return path
