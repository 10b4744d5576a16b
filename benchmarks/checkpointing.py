"""Gradient checkpointing with a capture-based loss: memory and step time, MiniLM (6 layers) + l1 on 2 layers.

    python benchmarks/checkpointing.py [--batch 16] [--length 64] [--steps 3]

Each variant (plain, checkpointed) runs in its own process: MiniLM classification, ``l1`` on
``encoder.layers.2.out`` and ``encoder.final`` as GuidedTrainer computes it (capture -> term -> backward),
SGD without momentum (no optimizer state, so the memory growth is activations + gradients). Memory =
peak resident set during the steps minus the resident set before them (CPU; on a GPU the same script
reports torch.cuda.max_memory_allocated). Step time = median over the steps after one warm-up.
The terms of both variants are checked equal (1e-5). ``ratio:`` = checkpointed memory / plain memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import header

CHILD = r"""
import json, resource, statistics, sys, time
import torch
sys.path.insert(0, "benchmarks")
from _common import minilm
from guidetune.config import PluginSpec, build_plugin
from guidetune.layers.capture import Capture
from guidetune.regularizers import REGULARIZERS

ck, batch, length, steps = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cuda = torch.cuda.is_available()
dev = torch.device("cuda" if cuda else "cpu")
torch.manual_seed(0)  # the same dropout masks in both variants (checkpointing replays the RNG)
model, tok = minilm()
model.to(dev).train()
if ck:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
reg = build_plugin(REGULARIZERS, PluginSpec("l1", {"layers": ["encoder.layers.2.out", "encoder.final"]}))
reg.setup(model, tok)
opt = torch.optim.SGD(model.parameters(), lr=1e-5)
g = torch.Generator().manual_seed(0)
ids = torch.randint(1000, 29000, (batch, length), generator=g).to(dev)
inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 0] % 2).to(dev)}

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def step():
    with Capture(model, reg.captured) as cap:
        out = model(**inputs)
    term = reg.loss(cap, inputs)
    (out.loss + 0.1 * term).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(term)

before = rss_mib()
if cuda:
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
terms, times = [], []
for i in range(steps + 1):
    t0 = time.perf_counter()
    terms.append(step())
    if cuda:
        torch.cuda.synchronize()
    if i:
        times.append(time.perf_counter() - t0)
peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else \
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
print("RESULT", json.dumps({"mem_mib": peak, "step_s": statistics.median(times), "terms": terms,
                            "device": str(dev)}))
"""


def run(ck: bool, a) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if ck else "0", str(a.batch), str(a.length), str(a.steps)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.split("RESULT", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    header(f"gradient checkpointing + l1 on 2 layers, MiniLM (6 layers), batch {a.batch} x {a.length}")
    plain, ck = run(False, a), run(True, a)
    for x, y in zip(plain["terms"], ck["terms"]):
        if abs(x - y) > 1e-5 * max(abs(x), 1e-12):
            raise SystemExit(f"terms differ: {plain['terms']} vs {ck['terms']}")
    print(f"device: {plain['device']}; l1 terms equal in both ({len(plain['terms'])} steps)")
    print(f"plain:         {plain['mem_mib']:.0f} MiB peak growth, {plain['step_s'] * 1000:.0f} ms/step")
    print(f"checkpointing: {ck['mem_mib']:.0f} MiB peak growth, {ck['step_s'] * 1000:.0f} ms/step")
    print(f"time ratio: {ck['step_s'] / plain['step_s']:.3f}")
    print(f"ratio: {ck['mem_mib'] / plain['mem_mib']:.3f}")


if __name__ == "__main__":
    main()
