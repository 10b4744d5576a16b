"""finetune.mode: qlora -- the error where it cannot run, the config plumbing, and (GPU) one step with l1."""
import importlib.util
import sys

import pytest
import torch

from conftest import tiny_config
from guidetune.cli import main
from guidetune.config import FinetuneSpec, load_config
from guidetune.errors import ConfigError, GuidetuneError
from guidetune.finetune import modes

HINT = "finetune.mode: qlora needs bitsandbytes with a CUDA GPU: pip install guidetune[qlora]"


def test_without_bitsandbytes_the_error_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(GuidetuneError) as e:
        modes.require_qlora()
    assert str(e.value) == f"{HINT} (bitsandbytes is not installed)"


def test_without_a_gpu_the_error_says_so(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GuidetuneError, match=r"\(torch sees no CUDA GPU here; use finetune.mode=lora on this machine\)$"):
        modes.require_qlora()


@pytest.mark.skipif(torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None,
                    reason="qlora can run here")
def test_cli_train_refuses_qlora_before_writing_anything(tmp_path, tiny_dirs, cls_data, capsys):
    cfg = tiny_config(tmp_path, tiny_dirs["llama"], cls_data, name="q", finetune={"mode": "qlora"})
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {HINT} (")
    assert not (tmp_path / "runs" / "q").exists()


def test_qlora_config_fields_validate_and_build_the_bitsandbytes_config(tmp_path, tiny_dirs, cls_data, monkeypatch):
    cfg = load_config(str(tiny_config(tmp_path, tiny_dirs["llama"], cls_data)),
                      ["finetune.mode=qlora", "finetune.qlora_quant_type=fp4", "finetune.qlora_compute_dtype=float16"])
    assert cfg.finetune.mode == "qlora" and cfg.finetune.qlora_double_quant is True
    with pytest.raises(ConfigError, match="qlora_quant_type"):
        load_config(str(tiny_config(tmp_path, tiny_dirs["llama"], cls_data)), ["finetune.qlora_quant_type=int4"])
    monkeypatch.setattr(modes, "require_qlora", lambda: None)  # the plumbing, without bitsandbytes or a GPU
    import importlib.metadata as md

    real_version = md.version  # BitsAndBytesConfig checks the installed bitsandbytes version
    monkeypatch.setattr(md, "version", lambda name: "0.45.0" if name == "bitsandbytes" else real_version(name))
    monkeypatch.setenv("LOCAL_RANK", "1")
    kw = modes.qlora_load_kwargs(cfg.finetune)
    q = kw["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "fp4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype is torch.float16
    assert kw["device_map"] == {"": 1}  # each process's copy on its own GPU


def test_qlora_mode_on_an_unquantized_model_is_lora_on_the_attention_projections():
    """apply_mode's qlora branch (PEFT kbit preparation + LoRA) on a float model: same trainable set as lora."""
    from guidetune.testing import tiny_model

    q = modes.apply_mode(tiny_model("llama", "causal_lm"), FinetuneSpec(mode="qlora", lora_r=2), "causal_lm")
    lo = modes.apply_mode(tiny_model("llama", "causal_lm"), FinetuneSpec(mode="lora", lora_r=2), "causal_lm")
    names = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert names(q) == names(lo) and all("lora_" in n for n in names(q))
    assert any(n.endswith("q_proj.lora_A.default.weight") for n in names(q))


@pytest.mark.gpu
def test_gpu_qlora_step_with_l1_on_a_tiny_llama(tmp_path, tiny_dirs, cls_data):
    pytest.importorskip("bitsandbytes")
    import json

    data = tmp_path / "lm.txt"
    data.write_text("the cat sat on the mat and the dog did not\n" * 40)
    cfg = tiny_config(tmp_path, tiny_dirs["llama"], cls_data, name="qlora",
                      model={"name": str(tiny_dirs["llama"]), "head": "causal_lm"},
                      task={"name": "causal_lm", "train": str(data), "eval": str(data), "block_size": 16,
                            "limit_blocks": 8},
                      finetune={"mode": "qlora", "lora_r": 4},
                      regularizers=[{"name": "l1", "weight": 0.1, "layers": ["decoder.final", "decoder.layers.0.ffn.act"]}],
                      train={"max_steps": 2, "logging_steps": 1, "save_steps": 10, "batch_size": 4,
                             "gradient_checkpointing": True})
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "qlora"
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss/l1"' in line]
    assert len(logs) == 2 and all(r["loss/l1"] > 0 for r in logs)
    meta = json.loads((run / "run.json").read_text())
    assert 0 < meta["parameters"]["trainable"] < meta["parameters"]["total"]
    assert (run / "model" / "peft").is_dir()
    assert "bitsandbytes" in sys.modules
