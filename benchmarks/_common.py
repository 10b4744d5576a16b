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
