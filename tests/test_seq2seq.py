import json

import pytest

from conftest import tiny_config, write_jsonl
from guidetune.config import load_config
from guidetune.errors import GuidetuneError
from guidetune.evaluation.metrics import rouge


def test_rouge_by_hand():
    assert rouge(["the cat sat"], ["the cat sat"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    got = rouge(["the cat"], ["the cat sat down"])
    # unigrams: P = 2/2, R = 2/4 -> F = 2/3; bigrams: "the cat" P = 1/1, R = 1/3 -> F = 1/2
    assert got["rouge1"] == pytest.approx(2 / 3) and got["rouge2"] == pytest.approx(0.5)
    assert got["rougeL"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_seq2seq_trains_generates_and_scores_with_regularizers(tmp_path, tiny_dirs):
    rows = [{"source": f"the {w} sat on the mat all day long", "target": f"{w} sat"} for w in
            ["cat", "dog", "bird", "cow", "fox", "owl"]]
    data = {"train": write_jsonl(tmp_path / "tr.jsonl", rows * 3), "eval": write_jsonl(tmp_path / "ev.jsonl", rows)}
    cfg = load_config(tiny_config(
        tmp_path, tiny_dirs["t5"], data, name="s2s", model={"name": str(tiny_dirs["t5"]), "head": "seq2seq_lm"},
        task={"name": "seq2seq", "train": str(data["train"]), "eval": str(data["eval"]), "prefix": "summarize: ",
              "num_beams": 2, "max_new_tokens": 6},
        train={"max_steps": 3, "batch_size": 4, "logging_steps": 1},
        regularizers=[{"name": "l1", "weight": 0.1, "layers": ["decoder.final"]},
                      {"name": "attention_guidance", "weight": 0.1, "layers": ["decoder.layers.0.cross_attn.probs"],
                       "heads": [0], "pattern": "first"}]))
    from guidetune.experiment import run_training

    res = run_training(cfg)
    assert set(res["metrics"]) == {"rouge1", "rouge2", "rougeL", "n", "skipped_rows", "truncated_sources"}
    assert res["metrics"]["n"] == 6 and res["metrics"]["skipped_rows"] == 0
    assert all(0 <= res["metrics"][k] <= 1 for k in ("rouge1", "rouge2", "rougeL"))
    preds = [json.loads(x) for x in (tmp_path / "runs" / "s2s" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and {"source", "target", "prediction"} <= set(preds[0])
    logs = (tmp_path / "runs" / "s2s" / "metrics.jsonl").read_text()
    assert "loss/l1" in logs and "loss/attention_guidance/decoder0.x.h0" in logs


def test_missing_target_column(tmp_path, tok):
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.tasks import TASKS

    p = write_jsonl(tmp_path / "d.jsonl", [{"source": "a", "target": "b"}, {"source": "c", "summary": "d"}])
    t = build_plugin(TASKS, PluginSpec("seq2seq", {"train": str(p), "eval": str(p)}))
    t.setup(tok)
    with pytest.raises(GuidetuneError, match=r"d.jsonl:2: missing field 'target' \(fields here: source, summary\)"):
        t.dataset("train")


FIX = __import__("pathlib").Path(__file__).parent / "fixtures"


def _papers(tok, **params):
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.tasks import TASKS

    t = build_plugin(TASKS, PluginSpec("seq2seq", {"eval": str(FIX / "papers.jsonl"), "train": str(FIX / "papers.jsonl"),
                                                   "fields": {"source": "article", "target": "abstract"}, **params}))
    t.setup(tok)
    return t


def test_null_and_empty_rows_are_reported_or_skipped_on_request(tok):
    with pytest.raises(GuidetuneError) as e:
        _papers(tok).rows("eval")
    assert str(e.value) == f"{FIX / 'papers.jsonl'}:2:63: field 'abstract' is empty"
    t = _papers(tok, empty="skip")
    assert [w.rsplit(":", 1)[1] for _, _, w in t.rows("eval")] == ["1", "4"]
    assert t.describe() == {"eval_skipped_rows": 2}


def test_truncated_sources_and_targets_are_counted_and_rouge_uses_the_full_reference(tok, caplog):
    t = _papers(tok, empty="skip", max_source_length=16, max_target_length=3)
    feats = t.dataset("train")
    # row 1: a 20-times repeated sentence (> 16 tokens) and a 4-word abstract (6 tokens with [CLS]/[SEP])
    assert [len(f["input_ids"]) for f in feats] == [16, len(tok("Fisher information guides dropout.")["input_ids"])]
    assert [len(f["labels"]) for f in feats] == [3, 3]
    assert t.counts["train"] == {"skipped_rows": 2, "truncated_sources": 1, "truncated_targets": 2}
    assert "truncated_sources 1, truncated_targets 2" in caplog.text

    # a stand-in generator that returns the full references: ROUGE is 1 only if scored against the uncut target
    t.generate = lambda model, sources, batch_size=16: ["negation in language models", "Fisher-guided dropout"]
    m = t.evaluate(None)
    assert m["rouge1"] == 1.0 and m["rougeL"] == 1.0 and m["truncated_sources"] == 1 and m["n"] == 2
