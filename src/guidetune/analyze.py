"""``guidetune.analyze.neurons / attention / landscape``: the analyses from Python (as ``guidetune analyze``).

Each takes the command's options as keyword arguments (the fields of the analysis dataclass: see
``guidetune ls analyses``), writes its output set to ``out`` (a directory renamed into place, with
``manifest.json`` written last) and returns the summary the command prints from::

    res = guidetune.analyze.neurons("minilm", compare=["runs/demo/l1"], out="analysis/n")
    res["models"]["l1"]["dead_fraction"]
"""
from __future__ import annotations


def neurons(model: str = "minilm", compare: list[str] | None = None, **options) -> dict:
    """FFN neuron firing, dead neurons and topic (KT-score) neurons of ``model`` (a model or a run
    directory), ``compare`` models matched by neuron id. Returns summary.json's content."""
    from .analysis.neuron_analysis import NeuronAnalysis
    from .spec import build

    return build(NeuronAnalysis, {"models": [model] + list(compare or []), **options}, "analyze neurons").run()


def attention(models: list[str] | str, **options) -> dict:
    """Attention mass on a token set per layer and head (``corpus=``), or one sentence's heads
    (``sentence=``), for models or run directories side by side. Returns attention.json's content."""
    from .analysis.attention import AttentionAnalysis
    from .spec import build

    models = [models] if isinstance(models, str) else list(models)
    return build(AttentionAnalysis, {"models": models, **options}, "analyze attention").run()


def landscape(model: str, **options) -> dict:
    """1-D / 2-D loss surface around ``model`` (a run directory, or a model with ``config=``) along
    filter-normalised directions, optionally masked by Fisher rank. Returns landscape.json's content."""
    from .analysis.landscape import Landscape
    from .spec import build

    return build(Landscape, {"model": model, **options}, "analyze landscape").run()
