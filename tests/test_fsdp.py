"""Canonical names and captures through FSDP / activation-checkpoint / DeepSpeed-style wrappers.

The FSDP test runs torch's FullyShardedDataParallel (FSDP 1, parameters sharded over 2 CPU processes with
gloo, every BertLayer wrapped on its own, inside non-reentrant activation-checkpoint wrappers): each rank
computes l1 + attention_guidance on the activations of its own half of the batch, and the terms and
the (all-reduced) gradients equal those of the unwrapped model in one process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from guidetune.config import PluginSpec, build_plugin
from guidetune.layers.capture import Capture
from guidetune.layers.names import LayerScheme, resolve, strip_wrappers, unwrap
from guidetune.regularizers import REGULARIZERS
from guidetune.testing import tiny_model, tokenizer

SPECS = [PluginSpec("l1", {"layers": ["encoder.layers.0.out", "encoder.layers.1.ffn.act"]}),
         PluginSpec("attention_guidance", {"layers": ["encoder.layers.1.attn.probs"], "heads": [0, 1]})]
TEXTS = ["is a cat not a mammal ?", "can a cat not purr ?", "is a fish not a mammal ?", "can a fish swim ?"]


def _model():
    return tiny_model("bert", "classification", seed=1, num_labels=2, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def _batch(rows):
    enc = dict(tokenizer()(TEXTS, return_tensors="pt", padding=True))
    enc["labels"] = torch.tensor([0, 1, 0, 1])
    return {k: v[rows] for k, v in enc.items()}


def _terms_and_backward(model, batch):
    tok = tokenizer()
    regs = [build_plugin(REGULARIZERS, s) for s in SPECS]
    names = []
    for r in regs:
        r.setup(model, tok)
        names += [n for n in r.captured if n not in names]
    with Capture(model, names) as cap:
        out = model(**batch)
    terms = [r.loss(cap, batch) for r in regs]
    terms = [t[0] if isinstance(t, tuple) else t for t in terms]
    (out.loss + sum(terms)).backward()
    return [float(t.detach()) for t in terms]


WORKER = r"""
import json, sys
from functools import partial
import torch, torch.distributed as dist
import torch._dynamo  # before the group exists (see guidetune.distributed.before_joining)
dist.init_process_group("gloo")
rank = dist.get_rank()
sys.path.insert(0, sys.argv[2])
from test_fsdp import _batch, _model, _terms_and_backward
from guidetune.layers.names import strip_wrappers
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)
from transformers.models.bert.modeling_bert import BertLayer

model = _model()
apply_activation_checkpointing(model, checkpoint_wrapper_fn=partial(checkpoint_wrapper,
                               checkpoint_impl=CheckpointImpl.NO_REENTRANT), check_fn=lambda m: isinstance(m, BertLayer))
wrapped = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({BertLayer}), device_id=torch.device("cpu"), use_orig_params=True)
terms = _terms_and_backward(wrapped, _batch([2 * rank, 2 * rank + 1]))
everyone = [None] * dist.get_world_size()
dist.all_gather_object(everyone, terms)
raw = [n for n, _ in wrapped.named_parameters()]
with FSDP.summon_full_params(wrapped, with_grads=True):
    grads = {strip_wrappers(n): p.grad.tolist() for n, p in wrapped.named_parameters() if p.grad is not None}
if rank == 0:
    json.dump({"terms": everyone, "grads": grads, "raw_names": raw, "type": type(wrapped).__name__},
              open(sys.argv[1], "w"))
del wrapped, model
dist.barrier()
dist.destroy_process_group()
import gc, os
gc.collect()
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
os.write(2, ("\n" + f"threads-after rank {rank}: {','.join(names)}" + "\n").encode())  # one write: shared stderr
"""


@pytest.mark.slow
def test_fsdp_two_cpu_processes_give_the_unwrapped_terms_and_gradients(tmp_path):
    from test_ddp import _free_port, _launcher, assert_group_ended

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "fsdp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([_launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                           str(script), str(out), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_group_ended(proc.stderr, cli=False)
    got = json.loads(out.read_text())
    assert got["type"] == "FullyShardedDataParallel"
    assert any("_fsdp_wrapped_module" in n and "_checkpoint_wrapped_module" in n for n in got["raw_names"])

    assert_equals_two_plain_ranks(got)


def assert_equals_two_plain_ranks(got: dict) -> None:
    """Each rank's terms equal the plain model's on that rank's half of the batch, and the gathered
    gradients (under their plain names) equal the average of the two plain backward passes."""
    ref_grads = {}
    for rank in range(2):
        model = _model()
        terms = _terms_and_backward(model, _batch([2 * rank, 2 * rank + 1]))
        assert got["terms"][rank] == pytest.approx(terms, rel=1e-5)
        for n, p in model.named_parameters():
            ref_grads[n] = ref_grads.get(n, 0) + p.grad / 2  # data parallel: the ranks' gradients averaged
    assert set(got["grads"]) == set(ref_grads)  # the wrapped names map back to the plain ones
    for n, g in ref_grads.items():
        torch.testing.assert_close(torch.tensor(got["grads"][n]), g, rtol=1e-5, atol=1e-6, msg=n)


class DeepSpeedEngine(nn.Module):  # stands in for deepspeed.DeepSpeedEngine (not installed): same .module
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *a, **kw):
        return self.module(*a, **kw)


def test_unwrap_and_capture_through_deepspeed_style_and_checkpoint_wrappers(tok):
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    model = _model()
    engine = DeepSpeedEngine(checkpoint_wrapper(model, checkpoint_impl=CheckpointImpl.NO_REENTRANT))
    assert unwrap(engine) is model
    assert LayerScheme.from_model(engine).names() == LayerScheme.from_model(model).names()
    assert [r.module for r in resolve(engine, ["encoder.layers.1.ffn.act"])] == \
        [r.module for r in resolve(model, ["encoder.layers.1.ffn.act"])]
    batch = _batch([0, 1])
    plain = _terms_and_backward(model, batch)
    model.zero_grad()
    assert _terms_and_backward(engine, batch) == pytest.approx(plain, rel=1e-6)


def test_strip_wrappers():
    assert strip_wrappers("_fsdp_wrapped_module.bert.encoder.layer.0._checkpoint_wrapped_module."
                          "_fsdp_wrapped_module.output.dense.weight") == "bert.encoder.layer.0.output.dense.weight"
    assert strip_wrappers("_orig_mod.classifier.bias") == "classifier.bias"
    assert strip_wrappers("bert.pooler.dense.weight") == "bert.pooler.dense.weight"
