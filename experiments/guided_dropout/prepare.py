"""Write the BeliefBank training questions as a classification file (under runs/, not in the project:
it is derived from the release) and estimate MiniLM's Fisher on a 5% sub-sample, with the sub-sample
reliability table (seed Table 1) against a 33% reference.

    python experiments/guided_dropout/prepare.py
"""
import json
from pathlib import Path

from guidetune.cli import main
from guidetune.config import PluginSpec, build_plugin
from guidetune.tasks import TASKS
from guidetune.testing import tokenizer

out = Path("runs/guided-dropout")
out.mkdir(parents=True, exist_ok=True)
task = build_plugin(TASKS, PluginSpec("beliefbank", {"data": "../shared/data/beliefbank"}))
task.setup(tokenizer())
qs = task.questions("train")
(out / "train_questions.jsonl").write_text("".join(json.dumps({"text": q.text, "label": int(q.answer)}) + "\n" for q in qs))
raise SystemExit(main(["fisher", "minilm", "--data", str(out / "train_questions.jsonl"), "--objective", "task",
                       "--fraction", "0.05", "--reliability", "0.001,0.01,0.05,0.1,0.33", "--reference", "0.33",
                       "--plot", "--out", str(out / "fisher.safetensors")]))
