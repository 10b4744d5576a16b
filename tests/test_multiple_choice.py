import json

import pytest
import torch

from conftest import tiny_config
from guidetune.config import PluginSpec, build_plugin, load_config
from guidetune.errors import GuidetuneError
from guidetune.evaluation.scoring import option_logprobs
from guidetune.tasks import TASKS
from guidetune.testing import tiny_model

ITEMS = [
    {"prompt": "Q: Is the sky not green? A:", "classes": [" yes", " no"], "answer_index": 0},
    {"prompt": "Q: Which comes first, one or two? A:", "classes": [" one", " two", " three", " four"],
     "answer_index": 0},
    {"prompt": "The opposite of hot is", "classes": [" cold", " very warm indeed", " hot"], "answer_index": 0},
]


def _brute(model, tok, prompt, cont, kind):
    """One forward per (prompt, class): the naive way."""
    if kind == "causal_lm":
        p = tok(prompt)["input_ids"]
        c = tok(cont, add_special_tokens=False)["input_ids"]
        lp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
        return sum(float(lp[len(p) - 1 + j, c[j]]) for j in range(len(c)))
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    lab = tok(cont, return_tensors="pt")["input_ids"]
    lp = torch.log_softmax(model(input_ids=ids, labels=lab).logits[0].float(), -1)
    return sum(float(lp[j, lab[0, j]]) for j in range(lab.shape[1]))


@pytest.mark.parametrize("kind,head", [("gpt2", "causal_lm"), ("llama", "causal_lm"), ("t5", "seq2seq_lm")])
def test_scorer_equals_brute_force(tok, kind, head):
    model = tiny_model(kind).eval()
    got = option_logprobs(model, tok, [i["prompt"] for i in ITEMS], [i["classes"] for i in ITEMS], head, batch_items=2)
    with torch.no_grad():
        for item, scores in zip(ITEMS, got):
            for cls, (lp, n) in zip(item["classes"], scores):
                assert lp == pytest.approx(_brute(model, tok, item["prompt"], cls, head), abs=1e-4)
                expected_n = len(tok(cls, add_special_tokens=head == "seq2seq_lm")["input_ids"])
                assert n == expected_n


def _write(tmp_path, rows, name="mc.jsonl"):
    p = tmp_path / name
    if name.endswith(".jsonl"):
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        p.write_text(rows)
    return p


def test_csv_with_list_literals_and_accuracy(tmp_path, tok):
    p = _write(tmp_path, 'prompt,classes,answer_index\n"Is it?","[\' yes\', \' no\']",1\n"Pick","[\' a\', \' b\', \' c\']",2\n',
               name="mc.csv")
    task = build_plugin(TASKS, PluginSpec("multiple_choice", {"eval": str(p)}))
    task.setup(tok)
    assert [it.classes for it in task.items("eval")] == [(" yes", " no"), (" a", " b", " c")]
    m = task.evaluate(tiny_model("gpt2").eval(), batch_size=4)
    preds = task.predictions
    assert m["n"] == 2 and m["accuracy"] == sum(p["pred"] == p["answer_index"] for p in preds) / 2
    assert len(preds[1]["logprob"]) == 3 and preds[1]["logprob_per_token"][0] == preds[1]["logprob"][0]


@pytest.mark.parametrize("row,message", [
    ({"prompt": "x", "classes": [" a", " b"], "answer_index": 2}, r"mc.jsonl:2:42: answer_index 2 is out of range for 2 classes \(0-1\)"),
    ({"prompt": "x", "classes": " a b", "answer_index": 0}, r"mc.jsonl:2:17: 'classes' must be a list literal"),
    ({"prompt": "x", "classes": "__import__('os')", "answer_index": 0}, r"mc.jsonl:2:17: 'classes' must be a list literal"),
    ({"prompt": "x", "classes": 7, "answer_index": 0}, r"mc.jsonl:2:17: 'classes' must be a list of at least two strings"),
    ({"prompt": "x", "answer_index": 0}, r"mc.jsonl:2: missing field 'classes' \(fields here: prompt, answer_index\)"),
])
def test_bad_rows_name_file_and_row(tmp_path, tok, row, message):
    p = _write(tmp_path, [ITEMS[0], row])
    task = build_plugin(TASKS, PluginSpec("multiple_choice", {"eval": str(p)}))
    with pytest.raises(GuidetuneError, match=message):
        task.setup(tok)


@pytest.mark.slow
def test_causal_lm_training_with_guidance_and_periodic_multiple_choice(tmp_path, tiny_dirs, tok):
    text = tmp_path / "web.txt"
    text.write_text("\n".join(f"the {w} is not here but the cat is never late and then it runs" for w in
                              ["dog", "cat", "bird", "fish", "car", "tree"] * 20))
    mc = _write(tmp_path, ITEMS)
    cfg = load_config(tiny_config(
        tmp_path, tiny_dirs["gpt2"], {}, name="lm",
        model={"name": str(tiny_dirs["gpt2"]), "head": "causal_lm"},
        task={"name": "causal_lm", "train": str(text), "block_size": 16},
        train={"max_steps": 4, "batch_size": 4, "eval_steps": 2, "logging_steps": 2},
        regularizers=[{"name": "attention_guidance", "weight": 1.0, "layers": ["decoder.layers.*"],
                       "heads": [0, 1], "token_set": "negation"}],
        eval_tasks=[{"name": "multiple_choice", "eval": str(mc)}]))
    from guidetune.experiment import run_training

    res = run_training(cfg)
    assert res["eval_tasks"]["multiple_choice"]["n"] == 3
    logs = [json.loads(x) for x in (tmp_path / "runs" / "lm" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/multiple_choice/accuracy" in r for r in logs)
    train_logs = [r for r in logs if "loss" in r]
    assert {"loss/attention_guidance/decoder0.h0", "loss/attention_guidance/decoder1.h1"} <= set(train_logs[0])
    assert (tmp_path / "runs" / "lm" / "predictions_multiple_choice.jsonl").exists()
