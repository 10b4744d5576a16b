"""Run an experiment end to end: config -> model -> task -> GuidedTrainer -> evaluation -> results.json."""
from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

from .config import ExperimentConfig, build_plugin, parse_config
from .distributed import barrier, before_joining
from .errors import GuidetuneError
from .finetune.modes import apply_mode, load_trainable, parameter_report, save_finetuned
from .finetune.trainer import CheckpointMarker, GuidedTrainer, JsonlLogger, Term, load_term_states, load_totals
from .models import load_model
from .regularizers import REGULARIZERS
from .runlock import lock_path, run_lock
from .runs import RunDir, identity, identity_changes, mkdir_for
from .tasks import TASKS

log = logging.getLogger(__name__)


def build_terms(cfg: ExperimentConfig, model, tokenizer, run: RunDir | None = None) -> list[Term]:
    """Loss terms of the config; schedule plug-ins (dropout) are applied here and add no term."""
    terms, seen = [], {}
    for spec in cfg.regularizers:
        reg = build_plugin(REGULARIZERS, spec)
        reg.setup(model, tokenizer)
        if getattr(reg, "schedule_kind", False):
            print(reg.report(), flush=True)
            if run is not None:
                reg.save(run.path / f"{spec.name}_schedule.json")
            continue
        n = seen.get(spec.name, 0)
        seen[spec.name] = n + 1
        terms.append(Term(spec.name if n == 0 else f"{spec.name}.{n}", spec.weight, reg))
    return terms


def eval_tasks(cfg: ExperimentConfig, tokenizer) -> list[tuple[str, object]]:
    """The config's extra evaluation tasks, set up, keyed by name (name.1, ... when repeated)."""
    out, seen = [], {}
    for spec in cfg.eval_tasks:
        task = build_plugin(TASKS, spec)
        task.setup(tokenizer)
        n = seen.get(spec.name, 0)
        seen[spec.name] = n + 1
        out.append((spec.name if n == 0 else f"{spec.name}.{n}", task))
    return out


def prepare(cfg: ExperimentConfig):
    """(task, model, tokenizer) with the fine-tune mode applied."""
    from transformers import set_seed

    set_seed(cfg.seed)
    task = build_plugin(TASKS, cfg.task)
    if cfg.model.head != task.head and not (task.head == "any"):
        raise GuidetuneError(f"model.head: task '{cfg.task.name}' needs head '{task.head}', got '{cfg.model.head}'")
    num_labels = task.num_labels() if cfg.model.head == "classification" else None
    quant = {}
    if cfg.finetune.mode == "qlora":
        from .finetune.modes import qlora_load_kwargs

        quant = qlora_load_kwargs(cfg.finetune)
    model, tokenizer = load_model(cfg.model, num_labels=num_labels, problem_type=getattr(task, "problem_type", None),
                                  **quant)
    task.setup(tokenizer)
    if hasattr(task, "bind_model"):  # token limits clamped to the model's positions (guidetune.evaluation.scoring)
        task.bind_model(model)
    model = apply_mode(model, cfg.finetune, cfg.model.head)
    return task, model, tokenizer


def training_args(cfg: ExperimentConfig, run: RunDir):
    import torch
    from transformers import TrainingArguments

    before_joining()  # the TrainingArguments join the launcher's process group
    t = cfg.train
    return TrainingArguments(
        output_dir=str(run.checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        optim=t.optim,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="no",  # periodic task evaluation is GuidedTrainer's (train.eval_steps)
        report_to=t.report_to or "none",
        seed=cfg.seed,
        remove_unused_columns=False,
        dataloader_num_workers=t.dataloader_workers,
        bf16=t.bf16,
        fp16=t.fp16,
        # Non-reentrant: the first forward keeps its autograd graph, so captured activations (and the
        # regularizer gradients through them) are exact; the reentrant kind runs it under no_grad.
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        disable_tqdm=False,
        save_safetensors=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without an accelerator, accelerate only sets up multi-process (gloo) DDP when told "cpu".
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
    )


def saved_changes(run: RunDir, cfg: ExperimentConfig) -> list[str]:
    """What differs between the run's saved configuration (and data fingerprints) and ``cfg``."""
    from .config import read_yaml

    try:  # through today's schema, so fields added since the run started (with defaults) do not count
        saved = parse_config(read_yaml(run.config)).to_dict()
    except GuidetuneError:
        return ["config.yaml (not readable by this guidetune)"]
    meta = run.read_meta()
    now = cfg.to_dict()
    return identity_changes(saved, meta.get("data") if "run_id" in meta else None, now, identity(now)["data"])


def run_state(cfg: ExperimentConfig) -> tuple[str, list[str]]:
    """(state, changes) of the run ``cfg`` names: ``new``; ``restart`` (exists but nothing to resume:
    no checkpoint, no results); ``changed`` (started or finished with another configuration or data);
    ``resume`` (unfinished, same configuration); ``done`` (finished, same configuration)."""
    run = RunDir(cfg.run_dir)
    if not run.exists():
        return "new", []
    changes = saved_changes(run, cfg)
    if not run.started():
        return "restart", changes
    if changes:
        return "changed", changes
    return ("done" if run.finished() else "resume"), []


def _short(changes: list[str], n: int = 4) -> str:
    return ", ".join(changes[:n]) + (f" and {len(changes) - n} more" if len(changes) > n else "")


def _check_resumable(run: RunDir, cfg: ExperimentConfig) -> None:
    diff = saved_changes(run, cfg)
    if diff:
        raise GuidetuneError(
            f"cannot resume {run.path}: its saved config differs in {_short(diff)}; "
            "use the same config and overrides, pass --rerun-changed to start it again, or set name=... for a new run"
        )


def run_training(cfg: ExperimentConfig, resume: bool = False, callbacks: list | None = None,
                 rerun_changed: bool = False) -> dict:
    """Train, evaluate and write the run directory; returns results.json's content.

    An existing run directory is continued only with ``resume``; one that holds nothing to resume (it
    failed before its first checkpoint) starts again with ``cfg``; one made with another configuration
    or other data is refused, or, with ``rerun_changed``, deleted and run again."""
    run = RunDir(cfg.run_dir)
    args = training_args(cfg, run)  # also joins the process group under torchrun / accelerate launch
    if args.process_index == 0:
        mkdir_for(lock_path(run.path))  # output_dir under a file: one line naming it
    with run_lock(run.path, enabled=args.process_index == 0):
        return _run_locked(cfg, run, args, resume, callbacks, rerun_changed)


def _run_locked(cfg: ExperimentConfig, run: RunDir, args, resume: bool, callbacks, rerun_changed: bool) -> dict:
    state, changes = run_state(cfg)
    checkpoint = run.last_checkpoint() if state == "resume" and resume else None
    barrier()  # every process has looked before the main one writes anything
    if state == "changed" and not rerun_changed:
        raise GuidetuneError(
            f"run '{run.path}' {'finished' if run.finished() else 'started'} with another configuration "
            f"(changed: {_short(changes)}); pass --rerun-changed to run it again, or set name=... for a new run")
    if state in ("done", "resume") and not resume:
        raise GuidetuneError(
            f"run directory '{run.path}' already exists; pass --resume to continue it, or set name=... for a new run"
        )
    if state == "done":
        log.info("%s already finished; nothing to do", run.path)
        return run.read_results()
    if cfg.train.gradient_checkpointing:  # before anything is written
        from .finetune.trainer import check_checkpointing

        check_checkpointing(cfg.model)
    if cfg.finetune.mode == "qlora":
        from .finetune.modes import require_qlora

        require_qlora()
    main = args.process_index == 0
    if main:
        if state in ("restart", "changed"):
            log.info("%s: starting again (%s)", run.path, "nothing to resume" if state == "restart"
                     else f"changed: {_short(changes)}")
            shutil.rmtree(run.path)
        mkdir_for(run.config)
        run.write_config(cfg.to_dict())
        run.write_identity(identity(cfg.to_dict()))
    progress: list[str] = []
    try:
        return _train(cfg, run, args, checkpoint, callbacks, main, progress)
    except GuidetuneError:
        # A config or data error found while setting up leaves no run directory behind (a crash
        # leaves one that the next `train` starts again, as it holds nothing to resume).
        if main and state != "resume" and not progress:
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _train(cfg: ExperimentConfig, run: RunDir, args, checkpoint, callbacks, main: bool, progress: list) -> dict:
    start = time.time()
    task, model, tokenizer = prepare(cfg)
    params = parameter_report(model)
    terms = build_terms(cfg, model, tokenizer, run if main else None)  # layer names checked before anything is said
    log.info("fine-tune mode %s: %s of %s parameters trainable (%.2f%%)", cfg.finetune.mode,
             f"{params['trainable']:,}", f"{params['total']:,}", params["trainable_pct"])
    if main:
        run.write_meta(cfg.seed, {"parameters": params, "terms": {t.key: t.weight for t in terms},
                                  "world_size": args.world_size})

    sampler = task.train_sampler(cfg.seed) if hasattr(task, "train_sampler") else None
    if sampler is not None and (cfg.train.batch_size < 2 or cfg.train.batch_size % 2):
        raise GuidetuneError(f"train.batch_size: must be even when task.pairs is set, so that every batch holds "
                             f"whole positive pairs; got {cfg.train.batch_size}")
    extra = eval_tasks(cfg, tokenizer)
    train_set = training_set(cfg, task, sampler)
    trainer = GuidedTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=task.collate,
        processing_class=tokenizer,
        terms=terms,
        run=run,
        train_sampler=sampler,
        callbacks=[JsonlLogger(run), CheckpointMarker(run, terms)] + list(callbacks or []),
        eval_tasks=[("", task)] + [(f"{k}/", t) for k, t in extra],
        eval_every=cfg.train.eval_steps,
    )
    if main:  # how the Trainer's accelerator runs the model: NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED, ...
        run.write_identity({"distributed": _distributed_type(trainer)})
        run.truncate_metrics(int(checkpoint.name.split("-")[1]) if checkpoint else 0)
    trainer.started = start
    if checkpoint:
        log.info("resuming from %s", checkpoint)
        load_term_states(terms, checkpoint, args.process_index)
        trainer.loss_base, trainer.runtime_base = load_totals(checkpoint)
    progress.append("training")
    out = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # HF's train_loss and our clock restart at zero on resume; the totals carried in the checkpoint
    # make them those of the whole run (the same as an uninterrupted run's).
    steps = max(out.global_step, 0.001)
    train_loss = (trainer.loss_base + out.training_loss * steps) / steps

    results = {
        "name": cfg.name,
        "seed": cfg.seed,
        "metrics": task.evaluate(trainer.model, "eval", cfg.train.eval_batch_size),
        "train": {"steps": out.global_step, "train_loss": train_loss, "examples": len(train_set),
                  "runtime_s": round(trainer.runtime_base + time.time() - start, 2),
                  **({"resumed_from_step": int(checkpoint.name.split("-")[1])} if checkpoint else {})},
        "parameters": params,
    }
    if extra:
        results["eval_tasks"] = {k: t.evaluate(trainer.model, "eval", cfg.train.eval_batch_size) for k, t in extra}
    if hasattr(task, "describe"):
        results["data"] = task.describe()
    layers = sparsity_layers(cfg, terms)
    if layers:
        from .evaluation.sparsity import activation_sparsity

        results["sparsity"] = activation_sparsity(trainer.model, task, "eval", layers, cfg.train.eval_batch_size)
    if trainer.is_world_process_zero():
        save_finetuned(trainer.model, tokenizer, run.model, cfg.finetune.mode)
        if getattr(task, "predictions", None):
            run.write_jsonl("predictions.jsonl", task.predictions)
        for key, t in extra:
            if getattr(t, "predictions", None):
                run.write_jsonl(f"predictions_{key}.jsonl", t.predictions)
        run.write_results(results)
        results = run.read_results()
        if not cfg.train.keep_checkpoints:
            shutil.rmtree(run.checkpoints, ignore_errors=True)
    barrier()  # no process returns (and exits) while the main one still writes (distributed.end_together)
    return results


def _distributed_type(trainer) -> str:
    """accelerate's name of the Trainer's set-up (its accelerator, which also sees a DeepSpeed plug-in)."""
    kind = getattr(getattr(trainer, "accelerator", None), "distributed_type", None)
    return str(getattr(kind, "value", kind or "NO"))


def training_set(cfg: ExperimentConfig, task, sampler) -> list[dict]:
    """The task's training features, or a seeded ``train.data_fraction`` sub-sample of them."""
    feats = task.dataset("train")
    if cfg.train.data_fraction >= 1:
        return feats
    if sampler is not None:
        raise GuidetuneError("train.data_fraction: cannot sub-sample a paired training set; lower task.max_pairs instead")
    k = max(1, round(cfg.train.data_fraction * len(feats)))
    keep = sorted(random.Random(f"data:{cfg.train.data_seed}").sample(range(len(feats)), k))
    return [feats[i] for i in keep]


def sparsity_layers(cfg: ExperimentConfig, terms: list[Term]) -> list[str]:
    """Layers whose activation sparsity is reported: the config's list, else those the terms regularize."""
    if cfg.sparsity_layers:
        return list(cfg.sparsity_layers)
    names: list[str] = []
    for t in terms:
        names += [n for n in t.regularizer.captured if not n.endswith("probs") and n not in names]
    return names


def check_run(run_dir: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False):
    """(RunDir, config) of a loadable run, or a one-line refusal; loads no weights (commands call it up front)."""
    run = RunDir(run_dir)
    if not run.exists():
        raise GuidetuneError(f"not a run directory (no config.yaml): '{run_dir}'")
    if not run.model.exists():
        raise GuidetuneError(f"run '{run_dir}' has no saved model yet (did training finish?)")
    from .config import read_yaml

    cfg = parse_config(read_yaml(run.config), source=str(run.config))
    for key, given in (("trust_remote_code", trust_remote_code), ("allow_pickle", allow_pickle)):
        if getattr(cfg.model, key) and not given:
            flag = "--" + key.replace("_", "-")
            raise GuidetuneError(f"run '{run_dir}' was trained with model.{key}=true; loading it can run code "
                                 f"shipped with it: pass {flag} only if you trust who made it")
    if "/" in str(cfg.model.attn_implementation or "") and not trust_remote_code:  # a hub kernel is code too
        raise GuidetuneError(f"run '{run_dir}' asks for the attention kernel '{cfg.model.attn_implementation}' "
                             "(code from the hub); pass --trust-remote-code only if you trust who made it")
    return run, cfg


def load_run(run_dir: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False):
    """(config, task, model, tokenizer) of a finished run, with the fine-tuned weights loaded.

    A run directory is data, not code: ``trust_remote_code`` and ``allow_pickle`` come from the caller
    (the command line of the person loading it), never from the run's own ``config.yaml``. A run saved
    with either switched on is refused unless the caller passes it too."""
    run, cfg = check_run(run_dir, trust_remote_code, allow_pickle)
    model_spec = replace(cfg.model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    cfg = replace(cfg, model=model_spec)
    if cfg.finetune.mode == "full":
        cfg_full = replace(cfg, model=replace(model_spec, name=str(run.model)))
        task, model, tokenizer = prepare(cfg_full)
    else:
        task, model, tokenizer = prepare(cfg)
        load_trainable(model, run.model / "trainable.safetensors")
    return cfg, task, model, tokenizer


def evaluate_run(run_dir: str | Path, batch_size: int | None = None, trust_remote_code: bool = False,
                 allow_pickle: bool = False, device: str | None = "auto", dtype: str | None = None) -> dict:
    """Re-evaluate a run's saved model on its task; the metrics are stored under ``eval`` in results.json.

    ``device``/``dtype``: where and in which precision the model runs (:mod:`guidetune.devices`)."""
    from .devices import place, resolve_device

    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise GuidetuneError(f"--batch-size: must be >= 1, got {batch_size}")
    resolve_device(device)  # a bad --device fails before the model loads
    cfg, task, model, tokenizer = load_run(run_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    model, _ = place(model, device, dtype)
    model.eval()
    bs = batch_size or cfg.train.eval_batch_size
    metrics = task.evaluate(model, "eval", bs)
    run = RunDir(run_dir)
    results = run.read_results() if run.finished() else {"name": cfg.name}
    results["eval"] = metrics
    extra = eval_tasks(cfg, tokenizer)
    if extra:
        results["eval"]["eval_tasks"] = {k: t.evaluate(model, "eval", bs) for k, t in extra}
    run.write_results(results)
    return metrics
