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


# ---- files as published; truncation policy -----------------------------------------------------------------
FIX = __import__("pathlib").Path(__file__).parent / "fixtures"


def test_inverse_scaling_csv_and_its_reformatted_jsonl_give_the_same_items(tok):
    a = build_plugin(TASKS, PluginSpec("multiple_choice", {"eval": str(FIX / "inverse_scaling.csv")}))
    b = build_plugin(TASKS, PluginSpec("multiple_choice", {
        "eval": str(FIX / "inverse_scaling_reformatted.jsonl"),
        "fields": {"prompt": "input", "classes": "options", "answer_index": "label"},
        "label_map": {"A": 0, "B": 1, "C": 2, "D": 3}}))
    a.setup(tok)
    b.setup(tok)
    ia, ib = a.items("eval"), b.items("eval")
    assert [(i.prompt, i.classes, i.answer) for i in ia] == [(i.prompt, i.classes, i.answer) for i in ib]
    assert ia[0].prompt == "Question: Which is not a metal?\nA. wood\nB. steel\nAnswer:"  # newlines kept
    assert [i.answer for i in ia] == [0, 0, 2, 0] and ia[2].classes == (" A", " B", " C", " D")
    assert ia[1].where.endswith("inverse_scaling.csv:6")


def test_few_shot_prefix_goes_before_every_prompt(tok):
    t = build_plugin(TASKS, PluginSpec("multiple_choice", {"eval": str(FIX / "inverse_scaling.csv"),
                                                           "prefix": "Question: Is 3 odd?\nA. yes\nB. no\nAnswer: A\n\n"}))
    t.setup(tok)
    assert t.items("eval")[0].prompt == ("Question: Is 3 odd?\nA. yes\nB. no\nAnswer: A\n\n"
                                         "Question: Which is not a metal?\nA. wood\nB. steel\nAnswer:")


def test_max_positions_from_the_config():
    from guidetune.evaluation.scoring import effective_limit, max_positions

    assert max_positions(tiny_model("gpt2")) == 128  # n_positions
    assert max_positions(tiny_model("llama")) == 128  # max_position_embeddings
    assert max_positions(tiny_model("t5")) is None  # relative positions: no hard limit
    assert effective_limit(tiny_model("gpt2"), 2048) == 128 and effective_limit(tiny_model("gpt2"), 64) == 64


def test_prompt_longer_than_the_model_keeps_its_end_in_scoring_and_training(tmp_path, tok):
    model = tiny_model("gpt2").eval()  # 128 positions
    few_shot = "".join(f"Question: is {n} not even?\nAnswer: {'yes' if n % 2 else 'no'}\n" for n in range(40))
    prompt = few_shot + "Question: is 7 not even?\nAnswer:"
    classes = [" yes", " no way at all"]
    p = _write(tmp_path, [{"prompt": prompt, "classes": classes, "answer_index": 0}, ITEMS[0]])
    task = build_plugin(TASKS, PluginSpec("multiple_choice", {"eval": str(p), "train": str(p)}))
    task.setup(tok)
    task.bind_model(model)
    m = task.evaluate(model, batch_size=2)
    assert m["truncated_items"] == 1 and m["max_tokens"] == 128
    # by hand: [CLS] + the last (128 - longest option - 2 specials) content tokens + [SEP]
    content = tok(prompt, add_special_tokens=False)["input_ids"]
    longest = max(len(tok(c, add_special_tokens=False)["input_ids"]) for c in classes)
    keep = 128 - longest - 2
    kept = [tok.cls_token_id] + content[-keep:] + [tok.sep_token_id]
    assert tok.decode(content[-keep:]).endswith("question : is 7 not even? answer :")
    assert m["truncated_tokens"] == len(content) - keep == task.predictions[0]["prompt_tokens_cut"]
    with torch.no_grad():
        for cls, lp in zip(classes, task.predictions[0]["logprob"]):
            c = tok(cls, add_special_tokens=False)["input_ids"]
            ref = torch.log_softmax(model(input_ids=torch.tensor([kept + c])).logits[0].double(), -1)
            assert lp == pytest.approx(sum(float(ref[len(kept) - 1 + j, c[j]]) for j in range(len(c))), abs=1e-4)
    feats = task.dataset("train")  # training sees the same prompt tokens
    assert feats[0]["input_ids"][:len(kept)] == kept and len(feats[0]["input_ids"]) <= 128
    assert task.describe() == {"truncated_train": 1}


def test_option_that_does_not_fit_alone_is_one_line(tmp_path, tok):
    long_option = " never" * 130
    p = _write(tmp_path, [ITEMS[0], {"prompt": "Q:", "classes": [" a", long_option], "answer_index": 0}])
    task = build_plugin(TASKS, PluginSpec("multiple_choice", {"eval": str(p)}))
    task.setup(tok)
    with pytest.raises(GuidetuneError) as e:
        task.evaluate(tiny_model("gpt2").eval())
    assert str(e.value) == f"{p}:2: option 1 is 130 tokens; with one prompt token it does not fit the model's 128 positions"


def test_input_target_variant_with_the_answer_given_as_class_text(tmp_path, tok):
    rows = [{"input": "Question: Is ice not cold?\nAnswer:", "choices": "[' yes', ' no']", "target": " no"},
            {"input": "Question: Can a fish not walk?\nAnswer:", "choices": [" yes", " no"], "target": "yes"}]
    p = _write(tmp_path, rows, name="bb.jsonl")
    task = build_plugin(TASKS, PluginSpec("multiple_choice", {
        "eval": str(p), "fields": {"prompt": "input", "classes": "choices", "answer_index": "target"}}))
    task.setup(tok)
    assert [(i.classes, i.answer) for i in task.items("eval")] == [((" yes", " no"), 1), ((" yes", " no"), 0)]
    rows[1]["target"] = "maybe"
    _write(tmp_path, rows, name="bb.jsonl")
    task = build_plugin(TASKS, PluginSpec("multiple_choice", {
        "eval": str(p), "fields": {"prompt": "input", "classes": "choices", "answer_index": "target"}}))
    with pytest.raises(GuidetuneError) as e:
        task.setup(tok)
    assert str(e.value) == (f"{p}:2:82: answer_index must be an integer (or a class, or a label in label_map), "
                            "got 'maybe'")
