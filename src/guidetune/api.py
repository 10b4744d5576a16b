"""The Python API for notebooks and scripts: ``guidetune.train``, ``load_run``, ``evaluate``, ``fisher``.

Each function does what the command of the same name does, with the same checks and one-line errors
(:class:`guidetune.GuidetuneError`), and returns Python objects instead of printing::

    import guidetune
    run = guidetune.train("configs/sentiment.yaml", name="nb-l1", train__lr=1e-4, resume=True)
    run.results["metrics"]            # what results.json holds
    cfg, task, model, tok = run.load()
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GuidetuneError


@dataclass
class Run:
    """A run directory: ``path``, its ``config`` (an ExperimentConfig) and ``results`` (results.json)."""

    path: Path
    config: Any
    results: dict

    def metrics(self) -> list[dict]:
        """The records of metrics.jsonl (one per logging step: every loss term, learning rate, ...)."""
        from .runs import RunDir

        return RunDir(self.path).read_metrics()

    def load(self, trust_remote_code: bool = False, allow_pickle: bool = False):
        """(config, task, model, tokenizer) with the fine-tuned weights; see :func:`load_run`."""
        return load_run(self.path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)

    def evaluate(self, batch_size: int | None = None) -> dict:
        """Re-evaluate the saved model on the run's task; see :func:`evaluate`."""
        return evaluate(self.path, batch_size=batch_size)


def _config(config_or_path, overrides: dict[str, Any]):
    from .config import ExperimentConfig, apply_values, parse_config, read_yaml

    values = {k.replace("__", "."): v for k, v in overrides.items()}
    if isinstance(config_or_path, ExperimentConfig):
        data, source = config_or_path.to_dict(), config_or_path.source
    elif isinstance(config_or_path, dict):
        data, source = config_or_path, None
    elif isinstance(config_or_path, (str, Path)):
        data, source = read_yaml(config_or_path), str(config_or_path)
    else:
        raise GuidetuneError(f"config_or_path: expected a YAML path, a dict or an ExperimentConfig, "
                             f"got {type(config_or_path).__name__}")
    return parse_config(apply_values(data, values), source=source)


def train(config_or_path, overwrite: bool = False, resume: bool = False, rerun_changed: bool = False,
          **overrides) -> Run:
    """Fine-tune as ``guidetune train`` does and return the :class:`Run`.

    ``config_or_path``: a YAML file, a dict shaped like one, or an ExperimentConfig. ``overrides`` set
    fields by dotted path, written with ``__`` for the dots (``train__lr=1e-4``, ``name="x"``) or passed as
    a dict (``**{"regularizers.0.weight": 0}``). When the run directory exists: ``resume=True`` continues
    it (or just returns it when finished with the same configuration), ``overwrite=True`` deletes it and
    trains again, ``rerun_changed=True`` re-trains only when its configuration or data changed; with
    none of them an existing run is a one-line error, so re-running a notebook cell never silently
    reuses or destroys a result."""
    from .experiment import run_training
    from .runs import RunDir

    cfg = _config(config_or_path, overrides)
    run = RunDir(cfg.run_dir)
    if overwrite and run.exists():
        shutil.rmtree(run.path)
    results = run_training(cfg, resume=resume, rerun_changed=rerun_changed)
    return Run(run.path, cfg, results)


def load_run(path: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False):
    """(config, task, model, tokenizer) of a finished run, the fine-tuned weights loaded.

    A run directory is data: code shipped with its model runs, and pickled weights load, only when
    *you* pass ``trust_remote_code=True`` / ``allow_pickle=True`` -- never because its config.yaml says so."""
    from .experiment import load_run as _load

    return _load(path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def open_run(path: str | Path) -> Run:
    """A finished run directory as a :class:`Run` (reads files only; loads no model)."""
    from .config import parse_config, read_yaml
    from .runs import RunDir

    run = RunDir(path)
    if not run.exists():
        raise GuidetuneError(f"not a run directory (no config.yaml): '{path}'")
    return Run(run.path, parse_config(read_yaml(run.config), source=str(run.config)),
               run.read_results() if run.finished() else {})


def evaluate(run: str | Path | Run, batch_size: int | None = None, trust_remote_code: bool = False,
             allow_pickle: bool = False, device: str | None = "auto", dtype: str | None = None) -> dict:
    """Re-evaluate a run's saved model on its task (as ``guidetune eval``); returns the metrics, which
    are also stored under ``eval`` in its results.json. ``device``/``dtype`` as ``--device``/``--dtype``."""
    from .experiment import evaluate_run

    path = run.path if isinstance(run, Run) else run
    return evaluate_run(path, batch_size, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                        device=device, dtype=dtype)


def fisher(model: str, data: str, objective: str, out: str = "fisher.safetensors", **options) -> dict:
    """Diagonal empirical Fisher of ``model`` on ``data`` (as ``guidetune fisher``).

    ``objective``: mlm | clm | seq2seq | task. ``options`` are the command's flags with underscores
    (``fraction=0.1``, ``max_samples=500``, ``batch_size=16``, ``reliability="0.1,0.5,1"``, ``plot=True``,
    ``trust_remote_code=True``). Returns what the command reports: ``n`` (samples), ``out`` and, when
    asked, ``reliability`` rows. Read the file back with ``guidetune.analysis.fisher_estimate.load``."""
    from .analysis.fisher_cmd import run_fisher
    from .cli import _check_fisher_args, parser

    args = parser().parse_args(["fisher", str(model), "--data", str(data), "--objective", objective, "--out", str(out)])
    for key, value in options.items():
        if not hasattr(args, key) or key in ("fn", "command"):
            raise GuidetuneError(f"fisher: unknown option '{key}'")
        setattr(args, key, value)
    _check_fisher_args(args)
    return run_fisher(args)
