"""``guidetune eval MODEL_OR_RUN --task ...``: any model on any task, without training."""
import json
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from guidetune.cli import main

FIX = Path(__file__).parent / "fixtures"


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_minilm_on_a_classification_file_without_a_run(tmp_path, capsys):
    data = write_jsonl(tmp_path / "sst.jsonl", [{"sentence": t, "label": lab} for t, lab in
                                                [("great fun", "pos"), ("awful mess", "neg"), ("lovely day", "pos")]])
    code, out, err = _run(capsys, "eval", "minilm", "--task", "classification", "--data", data,
                          "--fields", "text=sentence", "--out", tmp_path / "ev", "--device", "cpu")
    assert code == 0, err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    m = res["tasks"]["classification"]["metrics"]
    assert m["n"] == 3 and res["model"] == "minilm" and res["run"] is False and res["device"] == "cpu"
    assert res["tasks"]["classification"]["task"]["fields"] == {"text": "sentence"}
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions_classification.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in preds] == ["pos", "neg", "pos"]
    assert m["accuracy"] == sum(p["gold"] == p["pred"] for p in preds) / 3
    assert "minilm / classification: accuracy=" in out and "written: " in out


def test_eval_several_tasks_on_a_causal_lm_directory(tmp_path, tiny_dirs, capsys):
    task_yaml = tmp_path / "reformatted.yaml"
    task_yaml.write_text(yaml.safe_dump({"name": "multiple_choice", "eval": str(FIX / "inverse_scaling_reformatted.jsonl"),
                                         "label_map": {"A": 0, "B": 1, "C": 2, "D": 3}}))
    code, out, err = _run(capsys, "eval", tiny_dirs["gpt2"], "--task", "multiple_choice", "--data", FIX / "inverse_scaling.csv",
                          "--task", task_yaml, "--data", "-", "--out", tmp_path / "ev", "--device", "cpu",
                          "--fields", "prompt=input,classes=options,answer_index=label")
    assert code != 0 and "error: " in err and "fields.prompt names 'input'" in err  # --fields apply to every task
    code, out, err = _run(capsys, "eval", tiny_dirs["gpt2"], "--task", "multiple_choice", "--data", FIX / "inverse_scaling.csv",
                          "--task", task_yaml, "--data", "-", "--out", tmp_path / "ev", "--device", "cpu")
    assert code != 0 and "no field 'prompt' for prompt" in err  # the YAML has no fields: mapping
    task_yaml.write_text(yaml.safe_dump({"name": "multiple_choice", "eval": str(FIX / "inverse_scaling_reformatted.jsonl"),
                                         "fields": {"prompt": "input", "classes": "options", "answer_index": "label"},
                                         "label_map": {"A": 0, "B": 1, "C": 2, "D": 3}}))
    code, out, err = _run(capsys, "eval", tiny_dirs["gpt2"], "--task", "multiple_choice", "--data", FIX / "inverse_scaling.csv",
                          "--task", task_yaml, "--data", "-", "--out", tmp_path / "ev", "--device", "cpu")
    assert code == 0, err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    a, b = (res["tasks"][k]["metrics"] for k in ("multiple_choice", "multiple_choice.1"))
    assert a == b and a["n"] == 4 and a["truncated_items"] == 0 and a["max_tokens"] == 128
    la = [json.loads(x)["logprob"] for x in (tmp_path / "ev" / "predictions_multiple_choice.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["logprob"] for x in (tmp_path / "ev" / "predictions_multiple_choice.1.jsonl").read_text().splitlines()]
    assert la == lb and [len(x) for x in la] == [2, 2, 4, 2]


def test_eval_beliefbank_consistency_of_a_pretrained_model(tmp_path, tiny_dirs, capsys):
    spec = tmp_path / "bb.yaml"
    spec.write_text(yaml.safe_dump({"task": {"name": "beliefbank", "consistency": "off", "eval_split": "val"}}))
    code, out, err = _run(capsys, "eval", tiny_dirs["bert"], "--task", spec, "--out", tmp_path / "ev", "--device", "cpu")
    assert code == 0, err
    m = json.loads((tmp_path / "ev" / "results.json").read_text())["tasks"]["beliefbank"]["metrics"]
    assert 0 <= m["constraint_consistency"] <= 1 and m["n"] > 0 and "multihop_consistency" not in m
    assert (tmp_path / "ev" / "predictions_beliefbank.jsonl").exists()


@pytest.mark.parametrize("args,message", [
    (["--task", "multiple_choise"], "--task: unknown task 'multiple_choise'. Did you mean 'multiple_choice'?"),
    (["--task", "multiple_choice", "--task", "seq2seq", "--data", "a", "--data", "b", "--data", "c"],
     "--data: give one file for all tasks or one per --task (2), got 3"),
    (["--task", "multiple_choice", "--data", "{dir}"], "is a directory; give a data file"),
    (["--data", "x.csv"], "eval: --data, --fields and --out go with --task"),
])
def test_eval_bad_input_is_one_line(tmp_path, tiny_dirs, capsys, args, message):
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    code, _, err = _run(capsys, "eval", tiny_dirs["gpt2"], *args, "--out", tmp_path / "ev")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_eval_a_run_on_another_file_and_a_task_of_another_head(tmp_path, tiny_dirs, cls_data, capsys):
    from conftest import tiny_config
    from guidetune.config import load_config
    from guidetune.experiment import run_training

    run_training(load_config(tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="r", train={"max_steps": 2})))
    run = tmp_path / "runs" / "r"
    code, out, err = _run(capsys, "eval", run, "--task", "classification", "--data", cls_data["eval"], "--device", "cpu")
    assert code == 0, err
    res = json.loads((run / "evals" / "results.json").read_text())
    assert res["run"] is True and res["tasks"]["classification"]["metrics"]["n"] == 12
    code, out, err = _run(capsys, "eval", run, "--task", "multiple_choice", "--data", FIX / "inverse_scaling.csv")
    assert code == 2 and f"--task multiple_choice: needs a 'causal_lm' model; run '{run}' holds a 'classification' model" in err
    code, out, err = _run(capsys, "eval", run)  # the run's own task, as before
    assert code == 0 and "accuracy=" in out and "eval" in json.loads((run / "results.json").read_text())
