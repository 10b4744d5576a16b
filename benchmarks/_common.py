"""Shared helpers for benchmarks: the packaged MiniLM, fixed batches, interleaved timing."""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def minilm(head: str = "classification", num_labels: int = 2):
    from guidetune.config import ModelSpec
    from guidetune.models import load_model

    return load_model(ModelSpec(name="minilm", head=head), num_labels=num_labels if head == "classification" else None)


def demo_texts() -> list[str]:
    import json
    from importlib import resources

    path = resources.files("guidetune") / "data" / "demo" / "sentiment_train.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def interleaved(fns: dict, rounds: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each fn, measured in alternating rounds so drift hits all equally."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M')}")


def time_trainer_steps(model, feats, terms: list, steps: int, rounds: int, batch_size: int = 16,
                       sampler=None) -> dict[str, float]:
    """Median step time (s) of a plain HF Trainer and of GuidedTrainer with ``terms`` on the same data."""
    from transformers import Trainer

    from guidetune.finetune.trainer import GuidedTrainer

    class Plain(Trainer):  # drops guidetune's gt_* keys, which only the regularizers read
        def compute_loss(self, model, inputs, *a, **kw):
            return super().compute_loss(model, {k: v for k, v in inputs.items() if not k.startswith("gt_")}, *a, **kw)

        def _get_train_sampler(self, ds=None):
            return sampler if sampler is not None else super()._get_train_sampler(ds)

    return time_alternating({
        "plain": lambda args, cb: Plain(model=model, args=args, train_dataset=feats, data_collator=_collate(),
                                        callbacks=[cb]),
        "guided": lambda args, cb: GuidedTrainer(model=model, args=args, train_dataset=feats, data_collator=_collate(),
                                                 callbacks=[cb], terms=terms, train_sampler=sampler),
    }, steps, rounds, batch_size)


def _collate():
    from transformers import AutoTokenizer

    from guidetune.tasks.base import pad_batch
    from guidetune.testing import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    return lambda f: pad_batch(tok, f)


def time_alternating(factories: dict, steps: int, rounds: int, batch_size: int = 16) -> dict[str, float]:
    """Median training-step time (s) of each trainer factory ``(args, callback) -> Trainer``.

    Each step is timed between the Trainer's on_step_begin and on_step_end callbacks; the trainers
    alternate in ``rounds`` so machine noise hits all alike; the first 3 steps of each run are dropped.
    """
    import tempfile

    from transformers import TrainerCallback, TrainingArguments

    class Timer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, *args, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, *args, **kw):
            self.times.append(time.perf_counter() - self.t0)

    times = {k: [] for k in factories}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size,
                                 learning_rate=1e-5, report_to="none", save_strategy="no", logging_steps=10**6,
                                 disable_tqdm=True, use_cpu=True, seed=0, dataloader_pin_memory=False,
                                 remove_unused_columns=False)
        for _ in range(rounds):
            for name, make in factories.items():
                timer = Timer()
                make(args, timer).train()
                times[name] += timer.times[3:]
    return {k: statistics.median(v) for k, v in times.items()}
