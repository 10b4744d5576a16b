"""guidetune: interpretability-guided fine-tuning of transformer language models.

The Python API (everything is imported on first use, so ``import guidetune`` stays light -- no torch)::

    import guidetune

    run = guidetune.train("configs/sentiment.yaml", name="nb", train__lr=1e-4, resume=True)  # -> Run
    run.results["metrics"], run.metrics()[-1]
    guidetune.evaluate(run)                                         # re-evaluate the saved model
    cfg, task, model, tok = guidetune.load_run(run.path)            # never runs code from the run
    guidetune.fisher("minilm", "data.txt", "mlm", out="f.safetensors", fraction=0.1)
    guidetune.analyze.neurons("minilm", compare=[str(run.path)], out="analysis/n")

    with guidetune.Capture(model, ["encoder.final"]) as cap:        # activations by canonical name
        model(**batch)
    cap["encoder.final"]                                            # aliases work on read too
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import ConfigError, GuidetuneError, TrainingDiverged

__version__ = "0.1.0"

_LAZY = {
    "Capture": "layers.capture", "Captures": "layers.capture", "LayerScheme": "layers.names", "resolve": "layers.names",
    "train": "api", "load_run": "api", "open_run": "api", "evaluate": "api", "fisher": "api", "Run": "api",
    "ExperimentConfig": "config", "load_config": "config",
}
_MODULES = ("analyze",)

__all__ = ["Capture", "Captures", "ConfigError", "ExperimentConfig", "GuidetuneError", "LayerScheme", "Run",
           "TrainingDiverged", "analyze", "evaluate", "fisher", "load_config", "load_run", "open_run", "resolve",
           "train", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load on first use
    from . import analyze
    from .api import Run, evaluate, fisher, load_run, open_run, train
    from .config import ExperimentConfig, load_config
    from .layers.capture import Capture, Captures
    from .layers.names import LayerScheme, resolve


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'guidetune' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
