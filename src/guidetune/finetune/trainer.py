"""GuidedTrainer: a ``transformers.Trainer`` whose loss is the task loss plus weighted regularizer terms.

    total = task_loss + sum_i weight_i * term_i

Being a Trainer subclass, everything the Trainer does keeps working: accelerate / DDP / multi-node
(``accelerate launch`` or ``torchrun``), gradient accumulation, mixed precision, checkpoints and
resume, and ``report_to`` loggers (TensorBoard, W&B, ...). Only ``compute_loss`` and ``log`` are
extended. Each process captures its own activations and computes its own terms; DDP averages the
gradients, and the logged term values are averaged over processes exactly like the task loss.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from ..errors import TrainingDiverged
from ..layers.capture import Capture
from ..runs import CHECKPOINT_MARKER, RunDir, atomic_json

log = logging.getLogger(__name__)


@dataclass
class Term:
    """One weighted regularizer in the total loss."""

    key: str  # unique name in logs, e.g. "l1" or "l1.1"
    weight: float
    regularizer: object


class GuidedTrainer(Trainer):
    """``Trainer`` + regularizer terms on captured activations (see module docstring)."""

    def __init__(self, *args, terms: list[Term] | None = None, run: RunDir | None = None, train_sampler=None,
                 eval_tasks: list[tuple[str, object]] | None = None, eval_every: int = 0, **kwargs):
        self._sampler = train_sampler
        self.eval_tasks = list(eval_tasks or [])
        self.eval_every = eval_every
        self._evaluated_at = -1
        super().__init__(*args, **kwargs)
        self.terms = list(terms or [])
        self.run = run
        self._capture: Capture | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._counts = 0
        # Totals over every session of a resumed run (HF's own train_loss and runtime restart at zero).
        self.loss_base, self.runtime_base, self.started, self._tr_loss = 0.0, 0.0, time.time(), None

    def _capture_for(self, model) -> Capture:
        if self._capture is None:
            refuse_reentrant_checkpointing(self.model)
            names: list[str] = []
            for t in self.terms:
                names += [n for n in t.regularizer.captured if n not in names]
            self._capture = Capture(self.model, names)
        return self._capture

    def _get_train_sampler(self, train_dataset=None):
        # A task may need its own order (e.g. positive pairs kept whole in every batch).
        return self._sampler if self._sampler is not None else super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        extras = {k: inputs.pop(k) for k in list(inputs) if k.startswith("gt_")}
        if not self.terms or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self._capture_for(model) as captures:
            task_loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        batch = {**extras, **{k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}}
        values = {"task": task_loss.detach()}
        total = task_loss
        # When HF normalises the task loss by the item count of the whole accumulated batch it skips its
        # own division by the accumulation steps; our terms are per-micro-batch means, so divide here.
        hf_skips_division = (self.model_accepts_loss_kwargs and num_items_in_batch is not None
                             and self.compute_loss_func is None)
        scale = 1.0 / self.current_gradient_accumulation_steps if hf_skips_division else 1.0
        for t in self.terms:
            out = t.regularizer.loss(captures, batch)
            value, parts = out if isinstance(out, tuple) else (out, {})
            values[t.key] = value.detach()
            for part, v in parts.items():
                values[f"{t.key}/{part}"] = v.detach()
            total = total + (t.weight * scale) * value
        self._check_finite(values)
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v.float()
        self._counts += 1
        return (total, outputs) if return_outputs else total

    def _check_finite(self, values: dict[str, torch.Tensor]) -> None:
        stacked = torch.stack([v.float().reshape(()) for v in values.values()])
        if bool(torch.isfinite(stacked).all()):  # one device sync per step
            return
        bad = [k for k, v in values.items() if not math.isfinite(float(v))]
        step = self.state.global_step + 1
        last = self.run.last_checkpoint() if self.run else None
        raise TrainingDiverged(
            f"loss term '{bad[0]}' became {float(values[bad[0]])} at step {step}; training stopped before "
            f"that update. Last good checkpoint: {last or 'none yet'}"
        )

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # After the Trainer's own log/save of this step: the tasks' periodic evaluation. (HF's eval loop
        # needs an eval_dataset of model inputs; our tasks score generation, options or graphs instead.)
        self._tr_loss = args[0] if args else kwargs.get("tr_loss")  # the loss since the last log, for totals()
        super()._maybe_log_save_evaluate(*args, **kwargs)
        step = self.state.global_step
        if self.eval_every and self.eval_tasks and step % self.eval_every == 0 and step != self._evaluated_at:
            self._evaluated_at = step
            self.evaluate()

    def totals(self) -> dict[str, float]:
        """Sum of the per-step training losses and seconds so far, over every session of the run."""
        pending = float(self._tr_loss) if self._tr_loss is not None else 0.0
        return {"loss_sum": self.loss_base + self._total_loss_scalar + pending,
                "runtime_s": self.runtime_base + time.time() - self.started}

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        ckpt = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if self.is_world_process_zero() and ckpt.exists():  # before CheckpointMarker marks it complete
            atomic_json(ckpt / TOTALS, self.totals())

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Each task scores the model its own way; logged as ``eval/<task>/<metric>``."""
        if not self.eval_tasks:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        logs = {}
        for prefix, task in self.eval_tasks:
            metrics = task.evaluate(self.model, "eval", self.args.per_device_eval_batch_size)
            logs.update({f"eval/{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        self.log(logs)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logs)
        return logs

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._counts and "loss" in logs:
            for k, v in self._sums.items():
                mean = v / self._counts
                if self.args.world_size > 1:
                    mean = self._nested_gather(mean.reshape(1).to(self.args.device)).mean()
                logs[f"loss/{k}"] = round(float(mean), 8)
            self._sums, self._counts = {}, 0
        super().log(logs, *args, **kwargs)


def check_checkpointing(spec) -> None:
    """``train.gradient_checkpointing`` needs a model class that supports it; checked from the config
    alone (no weights), before the run directory is written."""
    from ..errors import GuidetuneError
    from ..models import _auto_class, load_config_only

    config = load_config_only(spec)
    try:
        cls = _auto_class(spec.head)._model_mapping[type(config)]
    except (KeyError, ValueError):
        return  # remote code or an unusual head: transformers decides when training starts
    if not getattr(cls, "supports_gradient_checkpointing", False):
        raise GuidetuneError(f"train.gradient_checkpointing: {cls.__name__} ({config.model_type}) does not support "
                             "gradient checkpointing in transformers; set train.gradient_checkpointing=false")


def refuse_reentrant_checkpointing(model) -> None:
    """Captures need non-reentrant checkpointing: the reentrant kind runs the first forward under
    ``no_grad``, so captured activations would carry no gradient and the regularizers would train nothing.
    (Hooks are removed when the capture block exits, before the backward pass recomputes anything, so each
    activation is recorded once.)"""
    from ..errors import GuidetuneError

    for m in model.modules():
        fn = getattr(m, "_gradient_checkpointing_func", None)
        if getattr(m, "gradient_checkpointing", False) is True and fn is not None:
            if (getattr(fn, "keywords", None) or {}).get("use_reentrant", True):
                raise GuidetuneError("train.gradient_checkpointing: the model uses reentrant checkpointing, which "
                                     "detaches captured activations; enable it with gradient_checkpointing_kwargs="
                                     "{'use_reentrant': False} (guidetune's train.gradient_checkpointing does)")


class JsonlLogger(TrainerCallback):
    """Append every log record (with its step) to the run's metrics.jsonl (main process only)."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.run.append_metrics({"step": state.global_step, "epoch": state.epoch, **logs})


class CheckpointMarker(TrainerCallback):
    """Mark a checkpoint complete once the Trainer has finished writing it (HF writes in place).

    Regularizers with state (e.g. the contrastive queue) save it next to the checkpoint, one file per
    process, before the marker is written, so a resumed run continues exactly where it stopped."""

    def __init__(self, run: RunDir, terms: list[Term] | None = None):
        self.run = run
        self.terms = terms or []

    def on_save(self, args, state, control, **kwargs):
        ckpt = self.run.checkpoints / f"checkpoint-{state.global_step}"
        states = {t.key: t.regularizer.state_dict() for t in self.terms if hasattr(t.regularizer, "state_dict")}
        if states and ckpt.exists():
            tmp = ckpt / f".regularizers_rank{args.process_index}.pt.tmp"
            torch.save(states, tmp)
            tmp.replace(ckpt / f"regularizers_rank{args.process_index}.pt")
        if args.world_size > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank's state is on disk before the checkpoint counts as complete
        if state.is_world_process_zero and ckpt.exists():
            atomic_json(ckpt / CHECKPOINT_MARKER, {"step": state.global_step})


TOTALS = "guidetune_totals.json"


def load_totals(checkpoint) -> tuple[float, float]:
    """(loss sum, seconds) saved with a checkpoint; (0, 0) for checkpoints written before they were saved."""
    path = Path(checkpoint) / TOTALS
    if not path.exists():
        return 0.0, 0.0
    t = json.loads(path.read_text())
    return float(t["loss_sum"]), float(t["runtime_s"])


def load_term_states(terms: list[Term], checkpoint, rank: int) -> None:
    """Restore regularizer state saved by :class:`CheckpointMarker` (nothing to do when none was saved)."""
    path = checkpoint / f"regularizers_rank{rank}.pt"
    if path.exists():
        states = torch.load(path, weights_only=True)
        for t in terms:
            if t.key in states:
                t.regularizer.load_state_dict(states[t.key])
