"""Canonical names, captures and regularizer terms through a real DeepSpeed ZeRO engine (stage 2: sharded
optimizer state and gradients; stage 3: parameters sharded too, gathered module by module during the
forward) on 2 CPU processes with gloo. Skipped where DeepSpeed is not installed (it is not a test extra:
its source build wants a CUDA toolchain unless ``DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed``).

Each rank computes l1 + attention_guidance on its own half of the batch; the terms equal those of the
plain model on that half in one process, and the full gradients (gathered with DeepSpeed's
``safe_get_full_grad``) equal the average of the two plain backward passes.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from test_fsdp import _model, assert_equals_two_plain_ranks

WORKER = r"""
import json, sys
import torch, torch.distributed as dist
import torch._dynamo  # before the group exists (see guidetune.distributed.before_joining)
sys.path.insert(0, sys.argv[2])
import deepspeed
from deepspeed.utils import safe_get_full_grad
deepspeed.init_distributed(dist_backend="gloo")
rank = dist.get_rank()
from test_fsdp import _batch, _model, SPECS
from guidetune.config import build_plugin
from guidetune.layers.capture import Capture
from guidetune.layers.names import LayerScheme, strip_wrappers
from guidetune.regularizers import REGULARIZERS
from guidetune.testing import tokenizer

model = _model()
config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": int(sys.argv[3])},
          "optimizer": {"type": "SGD", "params": {"lr": 0.0}}, "zero_allow_untested_optimizer": True}
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
regs = [build_plugin(REGULARIZERS, s) for s in SPECS]
names = []
for r in regs:
    r.setup(engine, tokenizer())  # canonical names resolved on the engine itself
    names += [n for n in r.captured if n not in names]
batch = _batch([2 * rank, 2 * rank + 1])
with Capture(engine, names) as cap:
    out = engine(**batch)
terms = [r.loss(cap, batch) for r in regs]
terms = [t[0] if isinstance(t, tuple) else t for t in terms]
engine.backward(out.loss + sum(terms))
grads = {strip_wrappers(n): safe_get_full_grad(p).float().tolist() for n, p in engine.module.named_parameters()
         if safe_get_full_grad(p) is not None}
everyone = [None] * dist.get_world_size()
dist.all_gather_object(everyone, [float(t.detach()) for t in terms])
if rank == 0:
    json.dump({"terms": everyone, "grads": grads, "type": type(engine).__name__,
               "names": LayerScheme.from_model(engine).names()}, open(sys.argv[1], "w"))
dist.barrier()  # no process exits while rank 0 writes; then the group ends before the interpreter does
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_two_cpu_processes_give_the_unwrapped_terms_and_gradients(tmp_path, stage):
    pytest.importorskip("deepspeed")
    from guidetune.layers.names import LayerScheme
    from test_ddp import _free_port, _launcher

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ds.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([_launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                           str(script), str(out), str(Path(__file__).parent), str(stage)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["type"] == "DeepSpeedEngine"
    assert got["names"] == LayerScheme.from_model(_model()).names()

    assert_equals_two_plain_ranks(got)


@pytest.mark.slow
def test_guidetune_train_under_accelerate_deepspeed_zero2_logs_every_term(tmp_path, tiny_dirs, cls_data):
    """The whole `train` command launched the usual way: accelerate launch --use_deepspeed (2 CPU processes)."""
    pytest.importorskip("deepspeed")
    from conftest import tiny_config
    from test_ddp import CLI, _free_port, _launcher

    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="ds",
                      regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]},
                                    {"name": "hoyer", "weight": 0.01, "layers": ["encoder.layers.0.ffn.act"]}])
    cmd = [_launcher("accelerate"), "launch", "--use_deepspeed", "--zero_stage", "2", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           CLI, "train", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Not asserted here, unlike plain DDP, FSDP and the analyses: after deepspeed.comm.destroy_process_group()
    # one gloo group's threads still live (DeepSpeed 0.19.8 keeps a reference somewhere in its modules).
    assert proc.stderr.count("threads-after rank") == 2  # both processes got to the end of the command
    run = tmp_path / "runs" / "ds"
    meta = json.loads((run / "run.json").read_text())
    assert (meta["world_size"], meta["distributed"]) == (2, "DEEPSPEED")  # the Trainer ran through DeepSpeed
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if "loss" in r]
    assert train_logs and all({"loss/task", "loss/l1", "loss/hoyer"} <= set(r) for r in train_logs)
    assert "accuracy" in json.loads((run / "results.json").read_text())["metrics"]
