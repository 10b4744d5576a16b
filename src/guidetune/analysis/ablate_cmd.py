"""The ``analyze ablate`` and ``analyze neurons --ablate-top`` commands: load, measure, write tables.

The ablation itself (hooks, replacement values, controls, corpus measure) is :mod:`.ablate`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..runs import atomic_write
from .ablate import Ablator, CorpusEval
from .ablate_units import parse_units


def _num(x: float, sign: bool = False) -> str:
    """4 decimals, or 3 significant digits for small values (embedding shifts are ~1e-4); below 1e-6
    (float rounding of an unablated shift) shown as 0 -- the JSON keeps the exact value."""
    x = 0.0 if abs(x) < 1e-6 else x
    if x != 0 and abs(x) < 0.01:
        return f"{x:+.2e}" if sign else f"{x:.2e}"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def markdown(res: dict) -> str:
    lines = [f"Units: {'; '.join(res['units'])}. Method: {res['method']}. Control: {res['control']}.", "",
             "| metric | before | ablated | change | random-units control: change, mean ± sd | controls changing it at least as much |",
             "|---|---|---|---|---|---|"]
    for m, r in res["metrics"].items():
        ctl = (f"{_num(r['control_mean'], True)} ± {_num(r['control_sd'])}", f"{r['control_at_least']:.0%}") if "control_mean" in r \
            else ("—", "—")
        lines.append(f"| {m} | {_num(r['before'])} | {_num(r['after'])} | {_num(r['delta'], True)} | {ctl[0]} | {ctl[1]} |")
    lines += ["", f"{res['evaluations']} evaluations ({res['draws']} control draws) in {res['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def write(out: str | Path, res: dict, stem: str = "ablation") -> None:
    atomic_write(Path(out) / f"{stem}.json", json.dumps(res, indent=1))
    atomic_write(Path(out) / f"{stem}.md", markdown(res))


def load_for_ablation(model_or_run: str, task: str | None, device: str = "auto", dtype: str | None = None,
                      trust_remote_code: bool = False, allow_pickle: bool = False):
    """(model, tokenizer, task or None): a run with its own task, or a model with ``--task CONFIG.yaml``."""
    from dataclasses import replace

    from ..devices import place
    from ..runs import RunDir

    if RunDir(model_or_run).exists():
        from ..experiment import load_run

        cfg, run_task, model, tok = load_run(model_or_run, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        if task and task != "corpus":
            run_task = _task_from_config(task, tok)
        model, _ = place(model, device, dtype)
        return model.eval(), tok, (None if task == "corpus" else run_task)
    if task in (None, "corpus"):
        from .common import load_any

        head = "causal_lm" if _is_causal(model_or_run, trust_remote_code) else "encoder"
        _, model, tok = load_any(model_or_run, head=head, device=device, dtype=dtype,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        return model, tok, None
    from ..config import load_config
    from ..models import load_model

    cfg = load_config(task)
    spec = replace(cfg.model, name=model_or_run, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    from ..config import build_plugin
    from ..tasks import TASKS

    t = build_plugin(TASKS, cfg.task)
    num_labels = t.num_labels() if spec.head == "classification" else None
    model, tok = load_model(spec, num_labels=num_labels, problem_type=getattr(t, "problem_type", None))
    t.setup(tok)
    model, _ = place(model, device, dtype)
    return model.eval(), tok, t


def _task_from_config(path: str, tok):
    from ..config import build_plugin, load_config
    from ..tasks import TASKS

    t = build_plugin(TASKS, load_config(path).task)
    t.setup(tok)
    return t


def _is_causal(name: str, trust_remote_code: bool) -> bool:
    from transformers import AutoConfig

    from ..models import resolve_name

    try:
        cfg = AutoConfig.from_pretrained(resolve_name(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return False
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (cfg.architectures or []))


def run_ablate(a) -> dict:
    """The ``analyze ablate`` command (argparse namespace ``a``)."""
    from .common import read_corpus
    from .neuron_analysis import BUILTIN_CONCEPTS, BUILTIN_CORPUS, read_concepts

    model, tok, task = load_for_ablation(a.model, a.task, a.device, a.dtype, a.trust_remote_code, a.allow_pickle)
    sets = parse_units(model, a.units)
    reference = [t for _, t, _ in read_corpus(a.reference or BUILTIN_CORPUS, a.text_field)] if a.method != "zero" else None
    ab = Ablator(model, tok, sets, a.method, reference, a.seed, a.batch_size)
    if task is None:
        texts = [t for _, t, _ in read_corpus(a.corpus or BUILTIN_CORPUS, a.text_field)]
        concepts = read_concepts(a.concepts or BUILTIN_CONCEPTS)
        evaluate = CorpusEval(model, tok, texts, concepts, a.batch_size)
    else:
        def evaluate(m):
            return task.evaluate(m, "eval", a.batch_size)
    from ..runs import describe_input, output_set

    res = ab.run(evaluate, a.draws)
    res["model"] = a.model
    with output_set(a.out, {"model": describe_input(a.model), "units": a.units, "method": a.method,
                            "task": a.task, "draws": a.draws}) as out:
        write(out, res)
    return res


def ablate_concepts(a) -> str:
    """``analyze neurons --ablate-top K``: per concept, ablate its top-K neurons (from the analysis just
    written to ``a.out``) and compare with K random neurons of the layer. A run is measured on its own
    task; a model on the corpus (loss for a causal LM, embedding shift otherwise), concept sentences vs
    the others. Writes ``<out>/ablation/`` (``ablation.md``, ``ablation_<concept>.json/.md``, its own
    manifest); returns the Markdown table."""
    from .ablate_units import neuron_file_units
    from .common import read_corpus
    from .neuron_analysis import BUILTIN_CONCEPTS, BUILTIN_CORPUS, read_concepts

    model, tok, task = load_for_ablation(a.model, None, a.device, a.dtype, a.trust_remote_code, a.allow_pickle)
    concepts = read_concepts(a.concepts or BUILTIN_CONCEPTS)
    texts = [t for _, t, _ in read_corpus(a.corpus or BUILTIN_CORPUS, a.text_field)]
    if task is None:
        evaluate = CorpusEval(model, tok, texts, concepts, min(a.batch_size, 64))
    else:
        def evaluate(m):
            return task.evaluate(m, "eval", a.batch_size)
    reference = texts if a.ablate_method != "zero" else None
    from ..runs import describe_input, output_set

    with output_set(Path(a.out) / "ablation", {"model": describe_input(a.model), "top": a.ablate_top,
                                               "method": a.ablate_method, "draws": a.draws}) as out:
        return _concept_rows(a, model, tok, task, evaluate, concepts, reference, out)


def _selectivity(c: str, k: int, inside: dict, outside: dict) -> str:
    """Row: change on the concept's sentences minus the change on the others, ablated vs per control draw."""
    sel = inside["delta"] - outside["delta"]
    if "control_deltas" not in inside:
        return f"| {c} | {k} | selectivity (concept − others) | — | {_num(sel, True)} | — | — |"
    cs = np.array(inside["control_deltas"]) - np.array(outside["control_deltas"])
    sd = cs.std(ddof=1) if cs.size > 1 else 0.0
    return (f"| {c} | {k} | selectivity (concept − others) | — | {_num(sel, True)} | {_num(cs.mean(), True)} ± {_num(sd)} | "
            f"{np.mean(cs >= sel - 1e-12):.0%} |")


def _concept_rows(a, model, tok, task, evaluate, concepts, reference, out: Path) -> str:
    from .ablate_units import neuron_file_units

    rows = []
    for c in concepts:
        ids, layer = neuron_file_units(a.out, a.ablate_top, c, f"--ablate-top {a.ablate_top} ({c})")
        sets = parse_units(model, f"{layer}:{','.join(map(str, ids))}")
        res = Ablator(model, tok, sets, a.ablate_method, reference, seed=0, batch_size=min(a.batch_size, 64)).run(
            evaluate, a.draws, progress=False)
        res.update(model=a.model, concept=c, neurons=ids)
        write(out, res, f"ablation_{''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in c)}")
        keys = [f"{evaluate.name}[{c}]", f"{evaluate.name}[not {c}]"] if task is None else list(res["metrics"])
        for k in keys:
            r = res["metrics"].get(k)
            if r:
                ctl = f"{_num(r['control_mean'], True)} ± {_num(r['control_sd'])}" if "control_mean" in r else "—"
                share = f"{r['control_at_least']:.0%}" if "control_mean" in r else "—"
                rows.append(f"| {c} | {len(ids)} | {k} | {_num(r['before'])} | {_num(r['delta'], True)} | {ctl} | {share} |")
        if task is None and all(k in res["metrics"] for k in keys):
            rows.append(_selectivity(c, len(ids), *(res["metrics"][k] for k in keys)))
    md = "\n".join([f"Ablating each concept's top-{a.ablate_top} neurons ({a.ablate_method}) vs {a.draws} draws of as "
                    "many random neurons of the same layer:", "",
                    "| concept | neurons | metric | before | change (top-K ablated) | change (random K), mean ± sd | "
                    "random draws changing it at least as much |", "|---|---|---|---|---|---|---|", *rows]) + "\n"
    atomic_write(out / "ablation.md", md)
    return md
