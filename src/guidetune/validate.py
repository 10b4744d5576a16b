"""``guidetune validate``: every config error at once, including the ones that need the model's config."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from .config import build_plugin, load_config
from .errors import ConfigError, GuidetuneError


_PATH_KEYS = ("train", "eval", "data", "glue_dir")


def layer_fields(cls) -> list[str]:
    """Plug-in dataclass fields holding layer names: named ``*layer*``, or ``metadata={"layers": True}``."""
    return [f.name for f in dataclasses.fields(cls) if "layer" in f.name or f.metadata.get("layers")]


def head_fields(cls) -> list[str]:
    """Fields holding attention-head indices: ``heads``/``head`` (or ``*_heads``) typed int or list[int]."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls)
            if (f.name in ("head", "heads") or f.name.endswith("_heads")) and "int" in str(hints.get(f.name))]


def _names(value) -> list[str]:
    """The string layer names in a raw field value (other types are the type checks' business)."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _ints(value) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)] if isinstance(value, list) else []


def _specs(cfg) -> list[tuple[str, str, str, dict]]:
    """(where, kind, plug-in name, raw params) of every plug-in of a parsed config."""
    out = [("task", "task", cfg.task.name, cfg.task.params)]
    out += [(f"regularizers[{i}]", "regularizer", r.name, r.params) for i, r in enumerate(cfg.regularizers)]
    out += [(f"eval_tasks[{i}]", "task", t.name, t.params) for i, t in enumerate(cfg.eval_tasks)]
    return out


def plugin_name_errors(specs, scheme, hf_config) -> list[str]:
    """Unknown layer names in every layer-name field, and head indices past the model's last head."""
    from .layers.names import num_heads
    from .regularizers import REGULARIZERS
    from .tasks import TASKS

    errors = []
    for where, kind, name, params in specs:
        registry = REGULARIZERS if kind == "regularizer" else TASKS
        if name not in registry or not dataclasses.is_dataclass(registry.get(name)):
            continue
        cls = registry.get(name)
        layers: list[str] = []
        for field in layer_fields(cls):
            for raw in _names(params.get(field)):
                try:
                    layers += scheme.expand(raw)
                except GuidetuneError as e:
                    errors.append(f"{where}.{field}: {e}")
        for field in head_fields(cls):
            stacks = sorted({n.split(".")[0] for n in layers}) or [scheme.head_stack()]
            for stack in stacks:
                n = num_heads(hf_config, stack)
                bad = [h for h in _ints(params.get(field)) if n is not None and not 0 <= h < n]
                if bad:
                    errors.append(f"{where}.{field}: head {bad[0]} is out of range for the {stack}: "
                                  f"{n} heads, 0-{n - 1}")
    return errors


def _raw_name_errors(path: str, overrides: list[str] | None) -> list[str]:
    """The layer-name/head checks on the raw YAML, for a config that has type errors too."""
    from .config import ModelSpec, apply_overrides, read_yaml
    from .layers.names import LayerScheme, has_table
    from .models import load_config_only

    try:
        data = apply_overrides(read_yaml(path), overrides or [])
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        name = model.get("name", ModelSpec().name)
        if not isinstance(name, str):
            return []
        hf_config = load_config_only(ModelSpec(name=name, trust_remote_code=model.get("trust_remote_code") is True))
        if not has_table(hf_config):
            return []
        scheme = LayerScheme.from_config(hf_config)
    except GuidetuneError:
        return []  # the parse errors already say what is wrong
    specs = []
    for where, key, kind in (("task", "task", "task"), ("regularizers", "regularizers", "regularizer"),
                             ("eval_tasks", "eval_tasks", "task")):
        raw = data.get(key)
        items = [(where, raw)] if key == "task" else [(f"{where}[{i}]", r) for i, r in enumerate(raw or [])
                                                      if isinstance(raw, list)]
        for w, item in items:
            item = {"name": item} if isinstance(item, str) else item
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                specs.append((w, kind, item["name"], {k: v for k, v in item.items() if k not in ("name", "weight")}))
    errors = plugin_name_errors(specs, scheme, hf_config)
    for raw in _names(data.get("sparsity_layers")):
        try:
            scheme.expand(raw)
        except GuidetuneError as e:
            errors.append(f"sparsity_layers: {e}")
    return errors


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


def _file_errors(cfg) -> list[str]:
    """Data paths, files regularizers read, and an output_dir that cannot be created."""
    errors = _missing_paths("task", cfg.task.params)
    for i, spec in enumerate(cfg.eval_tasks):
        errors += _missing_paths(f"eval_tasks[{i}]", spec.params)
    for i, spec in enumerate(cfg.regularizers):
        for key in ("fisher", "matrix"):  # files a regularizer reads at setup
            if spec.params.get(key) and not Path(spec.params[key]).is_file():
                errors.append(f"regularizers[{i}].{key}: file not found '{spec.params[key]}'")
    blocker = next((p for p in [Path(cfg.output_dir), *Path(cfg.output_dir).parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        errors.append(f"output_dir: cannot write runs under '{cfg.output_dir}': '{blocker}' is a file, not a directory")
    return errors


def validate_file(path: str, overrides: list[str] | None = None, quick: bool = False) -> list[str]:
    """All problems with a config file, one line each (empty when it is valid). Loads no weights.

    ``quick``: only what needs neither transformers nor the data -- the schema, every plug-in's
    parameters, file paths and output_dir (importing transformers alone takes ~2 s on a small machine)."""
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        if quick:
            return list(e.messages)
        # Type errors do not stop the layer-name and head checks: report both at once.
        return list(e.messages) + [m for m in _raw_name_errors(path, overrides) if m not in e.messages]
    except GuidetuneError as e:
        return [str(e)]
    if quick:
        return _file_errors(cfg)
    errors: list[str] = []
    from .layers.names import LayerScheme, family_of, has_table
    from .models import available_heads, load_config_only
    from .tasks import TASKS

    scheme = hf_config = None
    try:
        hf_config = load_config_only(cfg.model)
        if cfg.model.head not in available_heads(hf_config):
            errors.append(f"model.head: {hf_config.model_type} has no '{cfg.model.head}' head; "
                          f"available: {', '.join(available_heads(hf_config))}")
        if has_table(hf_config):
            scheme = LayerScheme.from_config(hf_config)
        elif cfg.regularizers or cfg.sparsity_layers:  # plain fine-tuning needs no layer table
            family_of(hf_config)  # raises the one-line "no canonical layer table" error
    except GuidetuneError as e:
        errors.append(str(e))
    task = build_plugin(TASKS, cfg.task)
    file_errors = _file_errors(cfg)
    errors += [e for e in file_errors if not e.startswith("output_dir:")]
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
    errors += [e for e in file_errors if e.startswith("output_dir:")]
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
        errors += plugin_name_errors(_specs(cfg), scheme, hf_config)
        try:
            scheme.expand(cfg.sparsity_layers) if cfg.sparsity_layers else None
        except GuidetuneError as e:
            errors.append(f"sparsity_layers: {e}")
    return errors
