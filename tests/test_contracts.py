"""Contract tests over the task and analysis registries (regularizers: test_regularizers.py).

Every registered task must: build, set up with a tokenizer, give training features a collated batch of
which yields a finite loss on a tiny model of its head, and evaluate to a dict of numbers. Every
analysis must run on a tiny model and write its outputs. A plug-in registered without an entry here
fails the test, so nothing joins the registry untested.
"""
import json
import math

import pytest
import torch

from conftest import write_jsonl
from guidetune.analysis import ANALYSES
from guidetune.config import PluginSpec, build_plugin
from guidetune.tasks import TASKS
from guidetune.tasks.base import strip_extras
from guidetune.testing import tiny_model, tokenizer

KIND = {"classification": "bert", "causal_lm": "gpt2", "seq2seq_lm": "t5"}


def _task_params(name, d):
    rows = [{"text": f"it is {w}", "label": w} for w in ["good", "bad", "fine", "good"]]
    mc = [{"prompt": "Pick:", "classes": [" a", " b"], "answer_index": 1}] * 3
    s2s = [{"source": f"the {w} sat down", "target": w} for w in ["cat", "dog", "owl"]]
    (d / "t.txt").write_text("the cat sat on the mat and the dog did not\n" * 20)
    return {
        "classification": {"train": str(write_jsonl(d / "c.jsonl", rows)), "eval": str(d / "c.jsonl")},
        "beliefbank": {"limit_train": 16, "consistency": "off", "constraint_facts": "eval"},
        "multiple_choice": {"eval": str(write_jsonl(d / "mc.jsonl", mc)), "train": str(d / "mc.jsonl")},
        "causal_lm": {"train": str(d / "t.txt"), "eval": str(d / "t.txt"), "block_size": 16, "limit_blocks": 4},
        "seq2seq": {"train": str(write_jsonl(d / "s.jsonl", s2s)), "eval": str(d / "s.jsonl"), "num_beams": 1,
                    "max_new_tokens": 4},
    }[name]


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name, tmp_path):
    task = build_plugin(TASKS, PluginSpec(name, _task_params(name, tmp_path)))
    head = task.head
    tok = tokenizer()
    if KIND[head] != "bert":  # as load_model does for models without token types
        tok.model_input_names = [n for n in tok.model_input_names if n != "token_type_ids"]
    task.setup(tok)
    model = tiny_model(KIND[head], head, **({"num_labels": task.num_labels()} if head == "classification" else {}))
    feats = task.dataset("train")
    assert feats and all("input_ids" in f for f in feats)
    batch, _ = strip_extras(task.collate(feats[:4]))
    assert torch.isfinite(model(**batch).loss)
    metrics = task.evaluate(model.eval(), "eval", 8)
    assert metrics and all(isinstance(v, (int, float)) for v in metrics.values())
    assert all(not math.isnan(v) for k, v in metrics.items() if not k.endswith("consistency"))


def _analysis_params(name, d, tiny_dirs):
    (d / "c.txt").write_text("it is not red\nnever in france\nalgebra and physics\n")
    (d / "k.yaml").write_text("colors: [red]\nSTEM: [algebra, physics]\n")
    bert = str(tiny_dirs["bert"])
    if name == "attention":
        return {"models": [bert], "corpus": str(d / "c.txt"), "sentence": "it is not red", "out": str(d / "o")}
    if name == "neurons":
        return {"models": [bert], "corpus": str(d / "c.txt"), "concepts": str(d / "k.yaml"),
                "layer": "encoder.layers.1.ffn.act", "out": str(d / "o")}
    if name == "landscape":
        rows = [{"text": t, "label": i % 2} for i, t in enumerate(["a b", "c d", "e f", "g h"])]
        cfg = d / "cfg.yaml"
        cfg.write_text(json.dumps({"name": "x", "output_dir": str(d / "runs"), "model": {"name": bert},
                                   "task": {"name": "classification", "train": str(write_jsonl(d / "l.jsonl", rows)),
                                            "eval": str(d / "l.jsonl")}}))
        return {"model": bert, "config": str(cfg), "dims": 1, "steps": 3, "batches": 1, "out": str(d / "o")}
    raise AssertionError(f"analysis '{name}' has no contract fixture")


@pytest.mark.parametrize("name", ANALYSES.names())
def test_analysis_contract(name, tmp_path, tiny_dirs):
    analysis = ANALYSES.get(name)(**_analysis_params(name, tmp_path, tiny_dirs))
    result = analysis.run()
    assert result and any((tmp_path / "o").iterdir())
