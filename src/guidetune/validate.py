"""``guidetune validate``: every config error at once, including the ones that need the model's config."""
from __future__ import annotations

from pathlib import Path

from .config import build_plugin, load_config
from .errors import ConfigError, GuidetuneError


_PATH_KEYS = ("train", "eval", "data", "glue_dir")


def _missing_paths(where: str, params: dict) -> list[str]:
    """Data paths in a task's parameters that do not exist (package paths guidetune:... included)."""
    from .tasks.base import PACKAGE_PREFIX

    out = []
    for key in _PATH_KEYS:
        value = params.get(key)
        if not isinstance(value, str) or not value or value.startswith(PACKAGE_PREFIX):
            continue
        if not Path(value).expanduser().exists():
            out.append(f"{where}.{key}: not found '{value}'")
        elif key in ("train", "eval") and Path(value).expanduser().is_dir():
            out.append(f"{where}.{key}: '{value}' is a directory; give a data file")
    return out


def _check_safetensors(model_dir: str) -> None:
    """Read the header of every safetensors file of a local model (cheap; a torn or foreign file fails)."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []:
        try:
            with safe_open(str(f), "pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            raise GuidetuneError(f"model.name: '{f}' is not a readable safetensors file ({e})") from None


def validate_file(path: str, overrides: list[str] | None = None) -> list[str]:
    """All problems with a config file, one line each (empty when it is valid). Loads no weights."""
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        return e.messages
    except GuidetuneError as e:
        return [str(e)]
    errors: list[str] = []
    from .layers.names import LayerScheme
    from .models import available_heads, load_config_only
    from .regularizers import REGULARIZERS
    from .tasks import TASKS

    scheme = None
    try:
        hf_config = load_config_only(cfg.model)
        if cfg.model.head not in available_heads(hf_config):
            errors.append(f"model.head: {hf_config.model_type} has no '{cfg.model.head}' head; "
                          f"available: {', '.join(available_heads(hf_config))}")
        scheme = LayerScheme.from_config(hf_config)
    except GuidetuneError as e:
        errors.append(str(e))
    task = build_plugin(TASKS, cfg.task)
    errors += _missing_paths("task", cfg.task.params)
    for i, spec in enumerate(cfg.eval_tasks):
        errors += _missing_paths(f"eval_tasks[{i}]", spec.params)
    for i, spec in enumerate(cfg.regularizers):
        for key in ("fisher", "matrix"):  # files a regularizer reads at setup
            if spec.params.get(key) and not Path(spec.params[key]).is_file():
                errors.append(f"regularizers[{i}].{key}: file not found '{spec.params[key]}'")
    if cfg.train.data_fraction < 1 and getattr(task, "pairs", "none") != "none":
        errors.append("train.data_fraction: cannot sub-sample a paired training set; lower task.max_pairs instead")
    try:  # what train's model loading refuses: no weights, pickled weights without allow_pickle, bad files
        from .models import check_weights, resolve_name

        model_dir = resolve_name(cfg.model.name)
        check_weights(model_dir, cfg.model.allow_pickle)
        _check_safetensors(model_dir)
    except GuidetuneError as e:
        if str(e) not in errors:
            errors.append(str(e))
    blocker = next((p for p in [Path(cfg.output_dir), *Path(cfg.output_dir).parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        errors.append(f"output_dir: cannot write runs under '{cfg.output_dir}': '{blocker}' is a file, not a directory")
    if getattr(task, "head", cfg.model.head) not in (cfg.model.head, "any"):
        errors.append(f"model.head: task '{cfg.task.name}' needs head '{task.head}', got '{cfg.model.head}'")
    if getattr(task, "pairs", "none") != "none" and (cfg.train.batch_size < 2 or cfg.train.batch_size % 2):
        errors.append(f"train.batch_size: must be even when task.pairs is set, so that every batch holds whole "
                      f"positive pairs; got {cfg.train.batch_size}")
    if not any(e.startswith("task.") for e in errors):
        try:  # reads and checks the task's files (labels, BeliefBank JSON, multiple-choice rows)
            from .config import ModelSpec
            from .models import load_tokenizer

            tok = load_tokenizer(ModelSpec(name=cfg.model.tokenizer or cfg.model.name))
            task.setup(tok)
            for i, spec in enumerate(cfg.eval_tasks):  # their files too, as train reads them
                if not any(e.startswith(f"eval_tasks[{i}].") for e in errors):
                    build_plugin(TASKS, spec).setup(tok)
        except GuidetuneError as e:
            errors.append(str(e))
    if scheme is not None:
        for i, spec in enumerate(cfg.regularizers):
            reg = build_plugin(REGULARIZERS, spec)
            for field in ("layers",):
                if hasattr(reg, field):
                    try:
                        scheme.expand(getattr(reg, field))
                    except GuidetuneError as e:
                        errors.append(f"regularizers[{i}].{field}: {e}")
        try:
            scheme.expand(cfg.sparsity_layers) if cfg.sparsity_layers else None
        except GuidetuneError as e:
            errors.append(f"sparsity_layers: {e}")
    return errors
