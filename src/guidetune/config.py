"""Experiment configuration: YAML -> dataclasses, ``key=value`` overrides, validation of everything at once.

An experiment file::

    name: demo-l1
    seed: 0
    model: {name: minilm, head: classification}
    finetune: {mode: full}
    task: {name: classification, train: data/train.jsonl, eval: data/dev.jsonl}
    train: {epochs: 3, lr: 5.0e-5, batch_size: 16}
    regularizers:
      - {name: l1, weight: 1.0e-3, layers: [encoder.final]}

Overrides address fields by dotted path: ``train.lr=1e-4``, ``regularizers.0.weight=0``,
``model.name=./my-model``; values are parsed as YAML (numbers, booleans, lists).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .errors import ConfigError, GuidetuneError, did_you_mean
from .spec import build, check, finish

Head = Literal["classification", "causal_lm", "seq2seq_lm", "encoder", "mlm"]


@dataclass
class ModelSpec:
    name: str = field(default="minilm", metadata={"help": "HF model directory, hub id, or 'minilm' (packaged)"})
    head: Head = field(default="classification", metadata={"help": "which head to load"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer path/id if not the model's"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with the model"})
    allow_pickle: bool = field(default=False, metadata={"help": "allow pickled (.bin) weights; unsafe"})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa | ...; None = HF default"})
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass
class FinetuneSpec:
    mode: Literal["full", "head", "last_layer", "lora", "qlora", "adapter"] = field(
        default="full", metadata={"help": "which parameters train (qlora: 4-bit base + LoRA, needs a CUDA GPU)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "module names LoRA adapts; default: the attention q/v projections"})
    adapter_reduction_factor: int = field(default=16, metadata={"help": "bottleneck = hidden / this"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "keep input embeddings frozen in full mode"})
    qlora_quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "qlora: 4-bit data type"})
    qlora_double_quant: bool = field(default=True, metadata={"help": "qlora: quantize the quantization constants"})
    qlora_compute_dtype: Literal["bfloat16", "float16", "float32"] = field(
        default="bfloat16", metadata={"help": "qlora: dtype the 4-bit layers compute in"})

    def __post_init__(self):
        e: list[str] = []
        check(e, self.lora_r > 0, f"lora_r: must be > 0, got {self.lora_r}")
        check(e, 0 <= self.lora_dropout < 1, f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        check(e, self.adapter_reduction_factor > 0,
              f"adapter_reduction_factor: must be > 0, got {self.adapter_reduction_factor}")
        finish(e)


@dataclass
class TrainSpec:
    # Hugging Face TrainingArguments names people will type, mapped to ours (for "Did you mean").
    SYNONYMS: ClassVar[dict[str, str]] = {
        "learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
        "per_device_eval_batch_size": "eval_batch_size", "gradient_accumulation_steps": "grad_accum",
        "lr_scheduler_type": "lr_scheduler", "warmup": "warmup_ratio", "num_epochs": "epochs",
    }
    epochs: float = field(default=3.0, metadata={"help": "passes over the training set"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: epochs)"})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = field(default=0.0, metadata={"help": "fraction of steps for linear warm-up"})
    lr_scheduler: str = field(default="linear", metadata={"help": "any transformers scheduler name"})
    optim: str = field(default="adamw_torch", metadata={"help": "any transformers optimizer name"})
    max_grad_norm: float = 1.0
    logging_steps: int = field(default=10, metadata={"help": "log every term every this many steps"})
    save_steps: int = field(default=200, metadata={"help": "checkpoint every this many steps"})
    save_total_limit: int = 2
    eval_steps: int = field(default=0, metadata={"help": "periodic evaluation every N steps (0: only at end)"})
    report_to: list[str] = field(default_factory=list, metadata={"help": "Trainer loggers, e.g. [tensorboard]"})
    dataloader_workers: int = 0
    bf16: bool = False
    fp16: bool = False
    data_fraction: float = field(default=1.0, metadata={"help": "train on a seeded sub-sample of this fraction"})
    data_seed: int = field(default=0, metadata={"help": "seed of the data_fraction sub-sample"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints after the run finished"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute block activations in the backward pass (less memory, ~30% slower); regularizer "
                "terms and gradients stay exact (non-reentrant checkpointing)"})

    def __post_init__(self):
        e: list[str] = []
        check(e, self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(e, self.epochs > 0 or self.max_steps > 0, f"epochs: must be > 0 (or set max_steps), got {self.epochs}")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "logging_steps", "save_steps"):
            check(e, getattr(self, name) > 0, f"{name}: must be > 0, got {getattr(self, name)}")
        check(e, 0 <= self.warmup_ratio < 1, f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        check(e, self.eval_steps >= 0, f"eval_steps: must be >= 0, got {self.eval_steps}")
        check(e, 0 < self.data_fraction <= 1, f"data_fraction: must be in (0, 1], got {self.data_fraction}")
        finish(e)


@dataclass
class PluginSpec:
    """A registered plug-in by name plus its own parameters (checked against its dataclass)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class ExperimentConfig:
    name: str = field(metadata={"help": "run name; the run directory is <output_dir>/<name>"})
    task: PluginSpec
    seed: int = 0
    output_dir: str = "runs"
    model: ModelSpec = field(default_factory=ModelSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    regularizers: list[PluginSpec] = field(default_factory=list)
    eval_tasks: list[PluginSpec] = field(
        default_factory=list, metadata={"help": "extra tasks evaluated at the end (and every eval_steps)"})
    sparsity_layers: list[str] = field(
        default_factory=list, metadata={"help": "layers whose activation sparsity results.json reports; "
                                                "default: the layers the regularizers act on"})
    source: str | None = field(default=None, metadata={"help": "file the config came from"})

    def __post_init__(self):
        # The run directory is <output_dir>/<name>, and re-running a changed run deletes it: the name
        # must stay inside output_dir.
        parts = self.name.replace("\\", "/").split("/")
        if Path(self.name).is_absolute() or any(p.strip() in ("", ".", "..") for p in parts) or "\0" in self.name:
            raise ConfigError([f"name: must be a relative path inside output_dir (no '..', '.', '/' at the ends), "
                               f"got '{self.name}'"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["task"] = {"name": self.task.name, **self.task.params}
        d["regularizers"] = [{"name": r.name, "weight": r.weight, **r.params} for r in self.regularizers]
        d["eval_tasks"] = [{"name": t.name, **t.params} for t in self.eval_tasks]
        return d

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


_TOP = ("name", "seed", "output_dir", "model", "finetune", "train", "task", "regularizers", "eval_tasks",
        "sparsity_layers", "source")


def read_yaml(path: str | Path) -> dict:
    """Load a YAML mapping; a syntax error names the file, line and column."""
    path = Path(path)
    if path.is_dir():
        raise GuidetuneError(f"config file: '{path}' is a directory; give a YAML file")
    if not path.is_file():
        raise GuidetuneError(f"config file not found: '{path}'")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GuidetuneError(f"{path}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                             "give a YAML config") from None
    except OSError as e:
        raise GuidetuneError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise GuidetuneError(f"YAML syntax error at {where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GuidetuneError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw config dict; returns a copy."""
    errors, values = [], {}
    for item in overrides:
        if "=" not in item:
            errors.append(f"override '{item}': expected key=value, e.g. train.lr=1e-4")
            continue
        key, raw = item.split("=", 1)
        try:
            values[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            values[key] = raw
    if errors:
        raise ConfigError(errors)
    return apply_values(data, values)


def apply_values(data: dict, values: dict[str, Any]) -> dict:
    """Set dotted keys (``train.lr``, ``regularizers.0.weight``) in a copy of a raw config dict."""
    data = copy.deepcopy(data)
    errors = []
    for key, value in values.items():
        parts = str(key).split(".")
        if parts[0] not in _TOP:
            errors.append(f"override '{key}': unknown field '{parts[0]}'.{did_you_mean(parts[0], _TOP)}")
            continue
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    errors.append(f"override '{key}': '{part}' is not an index of a list of {len(node)}")
                    break
                if last:
                    node[int(part)] = copy.deepcopy(value)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = copy.deepcopy(value)
                else:
                    node = node.setdefault(part, {})
            else:
                errors.append(f"override '{key}': '{'.'.join(parts[:i])}' is not a mapping")
                break
    if errors:
        raise ConfigError(errors)
    return data


def _plugin(raw: Any, where: str, errors: list[str], weighted: bool) -> PluginSpec | None:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        errors.append(f"{where}: expected a mapping with a 'name', got {raw!r}")
        return None
    raw = dict(raw)
    name = raw.pop("name")
    weight = raw.pop("weight", 1.0) if weighted else 1.0
    if isinstance(weight, str):
        with contextlib.suppress(ValueError):  # "1e-5" from YAML; a non-number is reported below
            weight = float(weight)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        errors.append(f"{where}.weight: expected a number, got {weight!r}")
        return None
    if weight < 0:
        errors.append(f"{where}.weight: must be >= 0, got {float(weight)}")
    return PluginSpec(str(name), raw, float(weight))


def parse_config(data: dict, source: str | None = None) -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a raw dict; every problem is reported at once."""
    from .registry import plugins  # the plug-ins sit above config: asked for by kind, not imported

    REGULARIZERS, TASKS = plugins("regularizer"), plugins("task")

    errors: list[str] = []
    data = dict(data)
    for key in data:
        if key not in _TOP:
            errors.append(f"{key}: unknown field.{did_you_mean(str(key), _TOP)}")
    if "name" not in data:
        stem = Path(source).stem if source else None
        if stem:
            data["name"] = stem
        else:
            errors.append("name: required field is missing (the run name)")
    task = _plugin(data.get("task"), "task", errors, weighted=False) if "task" in data else None
    if task is None and "task" not in data:
        errors.append("task: required field is missing (e.g. {name: classification, train: ..., eval: ...})")
    regs_raw = data.get("regularizers") or []
    if not isinstance(regs_raw, list):
        errors.append(f"regularizers: expected a list, got {regs_raw!r}")
        regs_raw = []
    regs = [_plugin(r, f"regularizers[{i}]", errors, weighted=True) for i, r in enumerate(regs_raw)]
    evals_raw = data.get("eval_tasks") or []
    if not isinstance(evals_raw, list):
        errors.append(f"eval_tasks: expected a list, got {evals_raw!r}")
        evals_raw = []
    evals = [_plugin(t, f"eval_tasks[{i}]", errors, weighted=False) for i, t in enumerate(evals_raw)]
    simple = {k: v for k, v in data.items() if k in _TOP and k not in ("task", "regularizers", "eval_tasks")}
    cfg = build(ExperimentConfig, {**simple, "task": {"name": "x"}}, "config", errors)
    # Plug-in parameters are checked by building the plug-in's own dataclass.
    for where, spec, registry in [("task", task, TASKS)] + [
        (f"regularizers[{i}]", r, REGULARIZERS) for i, r in enumerate(regs)
    ] + [(f"eval_tasks[{i}]", t, TASKS) for i, t in enumerate(evals)]:
        if spec is None:
            continue
        if spec.name not in registry:
            errors.append(f"{where}.name: unknown {registry.kind} '{spec.name}'.{did_you_mean(spec.name, registry.names())}")
            continue
        build(registry.get(spec.name), spec.params, where, errors, also=("weight",) if registry is REGULARIZERS else ())
    if errors:
        raise ConfigError([m[len("config."):] if m.startswith("config.") else m for m in errors])
    cfg.task = task
    cfg.regularizers = [r for r in regs if r is not None]
    cfg.eval_tasks = [t for t in evals if t is not None]
    cfg.source = source
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    data = read_yaml(path)
    data = apply_overrides(data, overrides or [])
    return parse_config(data, source=str(path))


def build_plugin(registry, spec: PluginSpec):
    """Instantiate a validated plug-in from its spec."""
    return build(registry.get(spec.name), spec.params, spec.name)
