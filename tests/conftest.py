"""Shared fixtures: tiny offline models (BERT, GPT-2, T5, LLaMA) with the MiniLM tokenizer, tiny data."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from guidetune.testing import save_tiny, tiny_model, tokenizer  # noqa: E402

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
BELIEFBANK = ROOT.parent / "shared" / "data" / "beliefbank"


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests run only where torch sees a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tok():
    return tokenizer()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Model directories: bert (classification), gpt2/llama (causal LM), t5 (seq2seq), bert_enc (bare)."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "bert": save_tiny("bert", root / "bert", head="classification"),
        "gpt2": save_tiny("gpt2", root / "gpt2"),
        "t5": save_tiny("t5", root / "t5"),
        "llama": save_tiny("llama", root / "llama"),
    }


@pytest.fixture
def make_model():
    return tiny_model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def cls_data(tmp_path_factory) -> dict[str, Path]:
    """A tiny, learnable text classification set (JSONL)."""
    d = tmp_path_factory.mktemp("data")
    pos = ["great fun", "lovely day", "really good", "very nice work", "happy and bright", "a wonderful gift"]
    neg = ["awful mess", "terrible day", "really bad", "very poor work", "sad and dull", "a horrible gift"]
    rows = [{"text": t, "label": "pos"} for t in pos] + [{"text": t, "label": "neg"} for t in neg]
    return {"train": write_jsonl(d / "train.jsonl", rows * 3), "eval": write_jsonl(d / "eval.jsonl", rows)}


def tiny_config(tmp_path: Path, model_dir: Path, data: dict, **extra) -> Path:
    """Write a small experiment YAML for the tiny BERT and return its path."""
    import yaml

    cfg = {
        "name": extra.pop("name", "tiny"),
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "head": "classification"},
        "task": {"name": "classification", "train": str(data.get("train")), "eval": str(data.get("eval")),
                 "max_length": 16},
        "train": {"max_steps": 6, "lr": 1e-3, "batch_size": 4, "logging_steps": 2, "save_steps": 3},
    }
    if "task" in extra:
        cfg["task"] = extra.pop("task")
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    p = tmp_path / f"{cfg['name']}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p
