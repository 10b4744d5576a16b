import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from guidetune.config import load_config
from guidetune.errors import TrainingDiverged
from guidetune.finetune.trainer import Term
from guidetune.runs import RunDir


def test_every_term_is_logged_at_every_logging_step_and_sums_to_the_total(tmp_path, tiny_dirs, cls_data):
    from guidetune.experiment import run_training

    cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], cls_data, train={"logging_steps": 1},
                                  regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]},
                                                {"name": "hoyer", "weight": 0.01, "layers": ["encoder.layers.0.ffn.act"]},
                                                {"name": "l1", "weight": 0.0, "layers": ["encoder.first"]}]))
    results = run_training(cfg)
    logs = [r for r in RunDir(cfg.run_dir).read_metrics() if "loss" in r]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    for r in logs:
        assert {"loss/task", "loss/l1", "loss/hoyer", "loss/l1.1"} <= set(r)
        total = r["loss/task"] + 0.1 * r["loss/l1"] + 0.01 * r["loss/hoyer"]
        assert r["loss"] == pytest.approx(total, abs=1e-4)  # HF rounds the logged loss to 4 digits
    assert set(results["sparsity"]) == {"encoder.layers.1.out", "encoder.layers.0.ffn.act", "encoder.layers.0.out"}
    meta = json.loads((cfg.run_dir / "run.json").read_text())
    assert meta["parameters"]["trainable"] == meta["parameters"]["total"] > 0
    assert {"torch", "transformers", "peft", "adapters"} <= set(meta["versions"])


class NanAt:
    """A regularizer that returns NaN from its 5th call on."""

    captured: list = []

    def __init__(self):
        self.calls = 0

    def setup(self, model, tok):
        pass

    def loss(self, captures, batch):
        self.calls += 1
        return torch.tensor(float("nan") if self.calls >= 5 else 0.5, requires_grad=True)


def test_nan_term_stops_with_one_line_and_the_last_checkpoint_stays_good(tmp_path, tiny_dirs, cls_data, monkeypatch):
    import guidetune.experiment as ex

    real = ex.build_terms
    monkeypatch.setattr(ex, "build_terms", lambda cfg, m, t, run=None: real(cfg, m, t, run) + [Term("spiky", 1.0, NanAt())])
    cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], cls_data, train={"save_steps": 3},
                                  regularizers=[{"name": "l1", "weight": 0.1}]))
    with pytest.raises(TrainingDiverged) as e:
        ex.run_training(cfg)
    run = RunDir(cfg.run_dir)
    ckpt = run.checkpoints / "checkpoint-3"
    assert str(e.value) == (f"loss term 'spiky' became nan at step 5; training stopped before that update. "
                            f"Last good checkpoint: {ckpt}")
    assert run.last_checkpoint() == ckpt and not (run.checkpoints / "checkpoint-6").exists()
    weights = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not run.finished()


def test_gradient_accumulation_keeps_terms_per_micro_batch(tmp_path, tiny_dirs, cls_data):
    from guidetune.experiment import run_training

    cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], cls_data, train={"grad_accum": 2, "logging_steps": 1},
                                  regularizers=[{"name": "l1", "weight": 0.1}]))
    run_training(cfg)
    logs = [r for r in RunDir(cfg.run_dir).read_metrics() if "loss" in r]
    for r in logs:
        assert math.isfinite(r["loss/l1"]) and 1.0 <= r["loss/l1"] <= math.sqrt(32)
        assert r["loss"] == pytest.approx(r["loss/task"] + 0.1 * r["loss/l1"], abs=1e-4)
