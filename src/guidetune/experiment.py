"""Run an experiment end to end: config -> model -> task -> GuidedTrainer -> evaluation -> results.json."""
from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import yaml

from .config import ExperimentConfig, build_plugin, parse_config
from .errors import GuidetuneError
from .finetune.modes import apply_mode, load_trainable, parameter_report, save_finetuned
from .finetune.trainer import CheckpointMarker, GuidedTrainer, JsonlLogger, Term, load_term_states
from .models import load_model
from .regularizers import REGULARIZERS
from .runs import RunDir
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
    model, tokenizer = load_model(cfg.model, num_labels=num_labels, problem_type=getattr(task, "problem_type", None))
    task.setup(tokenizer)
    model = apply_mode(model, cfg.finetune, cfg.model.head)
    return task, model, tokenizer


def training_args(cfg: ExperimentConfig, run: RunDir):
    import torch
    from transformers import TrainingArguments

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
        disable_tqdm=False,
        save_safetensors=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without an accelerator, accelerate only sets up multi-process (gloo) DDP when told "cpu".
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
    )


def _check_resumable(run: RunDir, cfg: ExperimentConfig) -> None:
    # Both through today's schema, so fields added since the run started (with defaults) do not count.
    saved = parse_config(yaml.safe_load(run.config.read_text())).to_dict()
    now = cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in ("source",) and saved.get(k) != now.get(k))
    if diff:
        raise GuidetuneError(
            f"cannot resume {run.path}: its saved config differs in {', '.join(diff)}; "
            "use the same config and overrides, or a new name"
        )


def run_training(cfg: ExperimentConfig, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train, evaluate and write the run directory; returns results.json's content."""
    run = RunDir(cfg.run_dir)
    args = training_args(cfg, run)  # also joins the process group under torchrun / accelerate launch
    exists, finished = run.exists(), run.finished()
    _barrier(args)  # every process has looked before the main one writes anything
    if exists and not resume:
        raise GuidetuneError(
            f"run directory '{run.path}' already exists; pass --resume to continue it, or set name=... for a new run"
        )
    if resume and exists:
        _check_resumable(run, cfg)
        if finished:
            log.info("%s already finished; nothing to do", run.path)
            return run.read_results()
    main = args.process_index == 0
    if main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg.to_dict())

    start = time.time()
    task, model, tokenizer = prepare(cfg)
    params = parameter_report(model)
    log.info("fine-tune mode %s: %s of %s parameters trainable (%.2f%%)", cfg.finetune.mode,
             f"{params['trainable']:,}", f"{params['total']:,}", params["trainable_pct"])
    terms = build_terms(cfg, model, tokenizer, run if main else None)
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
    checkpoint = run.last_checkpoint() if resume else None
    if main:
        run.truncate_metrics(int(checkpoint.name.split("-")[1]) if checkpoint else 0)
    if checkpoint:
        log.info("resuming from %s", checkpoint)
        load_term_states(terms, checkpoint, args.process_index)
    out = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    results = {
        "name": cfg.name,
        "seed": cfg.seed,
        "metrics": task.evaluate(trainer.model, "eval", cfg.train.eval_batch_size),
        "train": {"steps": out.global_step, "train_loss": out.training_loss, "examples": len(train_set),
                  "runtime_s": round(time.time() - start, 2)},
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
    return results


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


def _barrier(args) -> None:
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def sparsity_layers(cfg: ExperimentConfig, terms: list[Term]) -> list[str]:
    """Layers whose activation sparsity is reported: the config's list, else those the terms regularize."""
    if cfg.sparsity_layers:
        return list(cfg.sparsity_layers)
    names: list[str] = []
    for t in terms:
        names += [n for n in t.regularizer.captured if not n.endswith("probs") and n not in names]
    return names


def load_run(run_dir: str | Path):
    """(config, task, model, tokenizer) of a finished run, with the fine-tuned weights loaded."""
    run = RunDir(run_dir)
    if not run.exists():
        raise GuidetuneError(f"not a run directory (no config.yaml): '{run_dir}'")
    if not run.model.exists():
        raise GuidetuneError(f"run '{run_dir}' has no saved model yet (did training finish?)")
    cfg = parse_config(yaml.safe_load(run.config.read_text()), source=str(run.config))
    if cfg.finetune.mode == "full":
        cfg_full = replace(cfg, model=replace(cfg.model, name=str(run.model)))
        task, model, tokenizer = prepare(cfg_full)
    else:
        task, model, tokenizer = prepare(cfg)
        load_trainable(model, run.model / "trainable.safetensors")
    return cfg, task, model, tokenizer


def evaluate_run(run_dir: str | Path, batch_size: int | None = None) -> dict:
    """Re-evaluate a run's saved model on its task; the metrics are stored under ``eval`` in results.json."""
    cfg, task, model, tokenizer = load_run(run_dir)
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
