"""Fisher on two CPU processes (torchrun, gloo): the batches are dealt out, the float64 totals all-reduced,
and the file written once; equal to the one-process estimate within 1e-6 relative."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from guidetune.analysis.fisher_io import manifest_path
from guidetune.cli import main
from test_ddp import CLI, _free_port, assert_group_ended


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, tiny_dirs):
    data = tmp_path / "d.jsonl"
    texts = ["the cat sat on the mat", "a dog", "never say never again please", "birds fly south",
             "one two three four five six seven", "it rains", "so it goes", "the end of the story is near"]
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(texts * 2)))
    args = ["fisher", str(tiny_dirs["bert"]), "--data", str(data), "--objective", "task", "--batch-size", "3",
            "--device", "cpu"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two" / "two.safetensors"
    assert main([*args, "--out", str(one)]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else shutil.which("torchrun"), "--nproc_per_node", "2",
           "--master_port", str(_free_port()), CLI, *args, "--out", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_group_ended(proc.stderr)
    assert proc.stdout.count("Fisher from 16 samples written") == 1  # rank 0 only
    a, b = load_file(str(one)), load_file(str(two))
    top = max(float(v.max()) for v in a.values())
    for n in a:
        assert float(((b[n].double() - a[n].double()).abs() / a[n].double().abs().clamp_min(1e-12 * top)).max()) < 1e-6, n
    assert json.loads(manifest_path(two).read_text())["inputs"]["processes"] == 2
    assert sorted(p.name for p in two.parent.iterdir()) == ["two.json", "two.manifest.json", "two.safetensors"]
