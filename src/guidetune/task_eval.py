"""``guidetune eval MODEL_OR_RUN --task TASK [--data FILE]``: any model on any task, without training.

MODEL_OR_RUN is a Hugging Face model directory, a hub id, an alias (``minilm``) or a run directory
(its fine-tuned model). Each ``--task`` is a registered task name (``multiple_choice``,
``beliefbank``, ...), a task YAML (``{name: multiple_choice, eval: x.csv, fields: {...}}``) or an
experiment config (its ``task:``). ``--data`` gives the file the task is evaluated on (one for all
tasks, or one per task in order; ``-`` keeps the task's own): it becomes the task's ``eval`` file (and its ``train`` file when the
task spec gives none, so a classifier's label set comes from the same file), or BeliefBank's ``data``.
``--fields prompt=input,classes=options`` maps field names as ``fields:`` does in a config.

Written to ``--out`` (default ``evals/<model name>``, or ``<run>/evals`` for a run), atomically:
``results.json`` (per task: its parameters, metrics, data report) and ``predictions_<task>.jsonl``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from .config import ModelSpec, PluginSpec, build_plugin, read_yaml
from .errors import ConfigError, GuidetuneError, did_you_mean
from .records import parse_pairs
from .runs import RunDir, atomic_json, atomic_write, git_commit, mkdir_for, versions
from .spec import build
from .tasks import TASKS

log = logging.getLogger(__name__)


def task_spec(arg: str, data: str | None = None, fields: dict | None = None) -> PluginSpec:
    """The PluginSpec of one ``--task`` argument, with ``--data`` and ``--fields`` applied and checked."""
    path = Path(arg).expanduser()
    if arg.endswith((".yaml", ".yml")) or path.is_file():
        raw = read_yaml(path)
        if "task" in raw:  # an experiment config
            raw = raw["task"]
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or "name" not in raw:
            raise GuidetuneError(f"--task: '{arg}' holds no task (a mapping with a 'name', or a config with 'task:')")
        params = dict(raw)
        name = str(params.pop("name"))
    else:
        name, params = arg, {}
    if name not in TASKS:
        raise GuidetuneError(f"--task: unknown task '{name}'.{did_you_mean(name, TASKS.names())}")
    names = {f.name for f in dataclasses.fields(TASKS.get(name))}
    if data is not None and data != "-":
        if "eval" in names:
            params["eval"] = data
            if "train" in names and "train" not in params:
                params["train"] = data
        elif "data" in names:
            params["data"] = data
        else:
            raise GuidetuneError(f"--data: task '{name}' reads no data file")
    if fields:
        params["fields"] = {**(params.get("fields") or {}), **fields}
    errors: list[str] = []
    build(TASKS.get(name), params, f"task {name}", errors)
    if errors:
        raise ConfigError(errors)
    return PluginSpec(name, params)


def _keys(specs: list[PluginSpec]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        out.append(s.name if n == 0 else f"{s.name}.{n}")
    return out


class _Models:
    """Models by head, loaded once each: a run's own model, or a model name loaded per head."""

    def __init__(self, target: str, trust_remote_code: bool, allow_pickle: bool, device: str, dtype: str | None):
        self.target, self.flags = target, dict(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        self.device, self.dtype = device, dtype
        self.run = RunDir(target).exists()
        self.cache: dict = {}

    def get(self, task, name: str):
        from .devices import place

        head = task.head
        if self.run:
            if "run" not in self.cache:
                from .experiment import load_run

                cfg, _, model, tok = load_run(self.target, **self.flags)
                model, _ = place(model, self.device, self.dtype)
                self.cache["run"] = (cfg.model.head, model.eval(), tok)
            run_head, model, tok = self.cache["run"]
            if run_head != head:
                raise GuidetuneError(f"--task {name}: needs a '{head}' model; run '{self.target}' holds a "
                                     f"'{run_head}' model")
            return model, tok
        key = head
        if head == "classification":  # the head's size is the task's number of labels
            key = (head, task.num_labels(), getattr(task, "problem_type", None))
        if key not in self.cache:
            from .models import load_model

            spec = ModelSpec(name=self.target, head=head, **self.flags)
            num = task.num_labels() if head == "classification" else None
            model, tok = load_model(spec, num_labels=num, problem_type=getattr(task, "problem_type", None))
            archs = getattr(model.config, "architectures", None) or []
            if head == "classification" and not any("SequenceClassification" in a for a in archs):
                log.warning("%s ships no classification head: the %s metrics are those of a newly initialised "
                            "(random) head", self.target, name)
            model, _ = place(model, self.device, self.dtype)
            self.cache[key] = (model.eval(), tok)
        return self.cache[key]


def evaluate_model(target: str, tasks: list[str], data: list[str] | None = None, fields: str | None = None,
                   out: str | None = None, batch_size: int | None = None, device: str = "auto",
                   dtype: str | None = None, trust_remote_code: bool = False, allow_pickle: bool = False) -> dict:
    """Evaluate ``target`` on every task; write results.json and predictions; return results.json's content."""
    from .devices import resolve_device

    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise GuidetuneError(f"--batch-size: must be >= 1, got {batch_size}")
    data = list(data or [])
    if len(data) not in (0, 1, len(tasks)):
        raise GuidetuneError(f"--data: give one file for all tasks or one per --task ({len(tasks)}), got {len(data)}")
    mapping = parse_pairs(fields) if fields else None
    specs = [task_spec(t, data[i] if len(data) == len(tasks) else (data[0] if data else None), mapping)
             for i, t in enumerate(tasks)]
    resolve_device(device)  # a bad --device fails before any model loads
    models = _Models(target, trust_remote_code, allow_pickle, device, dtype)
    out_dir = Path(out) if out else (Path(target) / "evals" if models.run else Path("evals") / _label(target))
    blocker = next((q for q in [out_dir, *out_dir.parents] if q.exists()), None)
    if blocker is not None and not blocker.is_dir():  # fail before loading anything; create nothing yet
        raise GuidetuneError(f"--out: cannot write '{out_dir}': '{blocker}' is a file, not a directory")
    results: dict = {"model": target, "run": models.run, "device": str(resolve_device(device)), "dtype": dtype or "float32",
                     "versions": versions(), "git_commit": git_commit(), "tasks": {}}
    for key, spec in zip(_keys(specs), specs):
        start = time.time()
        task = build_plugin(TASKS, spec)
        model, tok = models.get(task, key)
        task.setup(tok)
        if hasattr(task, "bind_model"):
            task.bind_model(model)
        metrics = task.evaluate(model, "eval", batch_size) if batch_size else task.evaluate(model, "eval")
        entry = {"task": {"name": spec.name, **spec.params}, "metrics": metrics,
                 "runtime_s": round(time.time() - start, 2)}
        if hasattr(task, "describe"):
            entry["data"] = task.describe()
        mkdir_for(out_dir / "results.json")  # only once a task has a result: a failed first task leaves nothing
        preds = getattr(task, "predictions", None)
        if preds:
            name = f"predictions_{key}.jsonl"
            atomic_write(out_dir / name, "".join(json.dumps(p, default=str) + "\n" for p in preds))
            entry["predictions"] = name
        results["tasks"][key] = entry
        atomic_json(out_dir / "results.json", results)  # after every task: a crash keeps what was done
    results["out"] = str(out_dir)
    return results


def _label(target: str) -> str:
    p = Path(target)
    return p.name if p.name else target.replace("/", "_")
