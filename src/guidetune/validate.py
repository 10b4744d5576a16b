"""``guidetune validate``: every config error at once, including the ones that need the model's config."""
from __future__ import annotations

from .config import build_plugin, load_config
from .errors import ConfigError, GuidetuneError


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
    if getattr(task, "head", cfg.model.head) not in (cfg.model.head, "any"):
        errors.append(f"model.head: task '{cfg.task.name}' needs head '{task.head}', got '{cfg.model.head}'")
    if getattr(task, "pairs", "none") != "none" and (cfg.train.batch_size < 2 or cfg.train.batch_size % 2):
        errors.append(f"train.batch_size: must be even when task.pairs is set, so that every batch holds whole "
                      f"positive pairs; got {cfg.train.batch_size}")
    try:
        task.num_labels()  # reads the training file
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
