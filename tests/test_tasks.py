import pytest

from guidetune.config import PluginSpec, build_plugin
from guidetune.errors import GuidetuneError
from guidetune.evaluation.metrics import classification_metrics
from guidetune.tasks import TASKS


def _task(tok, tmp_path, lines, name="train.jsonl", **params):
    p = tmp_path / name
    p.write_text(lines)
    t = build_plugin(TASKS, PluginSpec("classification", {"train": str(p), "eval": str(p), **params}))
    t.setup(tok)
    return t


def test_missing_column_names_file_row_and_column(tok, tmp_path):
    with pytest.raises(GuidetuneError) as e:
        _task(tok, tmp_path, '{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n')
    assert str(e.value) == f"{tmp_path / 'train.jsonl'}:2: missing field 'text' (fields here: txt, label)"


def test_malformed_json_names_file_and_line(tok, tmp_path):
    with pytest.raises(GuidetuneError, match=r"train.jsonl:2:24: malformed JSON \(Expecting value\)"):
        _task(tok, tmp_path, '{"text": "a", "label": "x"}\n{"text": "b", "label": \n')


def test_csv_pairs_and_labels(tok, tmp_path):
    t = _task(tok, tmp_path, "q,p,label\nis it,yes it is,1\nis it,no,0\n", name="d.csv",
              text_field="q", text_pair_field="p")
    feats = t.dataset("train")
    assert t.labels == ["0", "1"] and [f["labels"] for f in feats] == [1, 0]
    assert tok.decode(feats[0]["input_ids"]) == "[CLS] is it [SEP] yes it is [SEP]"
    assert feats[0]["gt_eos_index"] == len(feats[0]["input_ids"]) - 1


def test_csv_row_with_too_many_columns(tok, tmp_path):
    with pytest.raises(GuidetuneError, match=r"d.csv:3: 4 columns, the header has 2"):
        _task(tok, tmp_path, "text,label\na,1\nb,1,2,3\n", name="d.csv")


def test_metrics_by_hand():
    m = classification_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], num_labels=2, positive=1)
    # positive class: tp=2, fp=1, fn=1 -> P=R=F1=2/3; negative: tp=1, fp=1, fn=1 -> 1/2
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)


FIX = __import__("pathlib").Path(__file__).parent / "fixtures"


def test_nli_tsv_in_cp1252_with_field_mapping_and_string_labels(tok):
    params = {"train": str(FIX / "nli_negation_cp1252.tsv"), "eval": str(FIX / "nli_negation_cp1252.tsv"),
              "fields": {"text": "premise", "text_pair": "hypothesis", "label": "gold"},
              "label_map": {"entailment": 0, "not_entailment": 1}}
    t = build_plugin(TASKS, PluginSpec("classification", params))
    t.setup(tok)  # the labels come from label_map; the file is read for the features
    with pytest.raises(GuidetuneError) as e:
        t.dataset("train")
    assert str(e.value).endswith("nli_negation_cp1252.tsv: byte 31 (line 2, 0xe9) is not valid utf-8; "
                                 "try encoding: cp1252")
    t = build_plugin(TASKS, PluginSpec("classification", {**params, "encoding": "cp1252"}))
    t.setup(tok)
    feats = t.dataset("train")
    assert t.labels == ["entailment", "not_entailment"] and [f["labels"] for f in feats] == [0, 1, 1, 0]
    assert tok.decode(feats[1]["input_ids"]) == "[CLS] he didn ’ t say “ no ”. [SEP] he said no. [SEP]"


def test_label_not_in_label_map_and_unknown_mapping_key(tok, tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text('{"q": "Is ice not cold?", "a": "NO"}\n{"q": "Maybe?", "a": "MAYBE"}\n')
    t = build_plugin(TASKS, PluginSpec("classification", {"train": str(p), "eval": str(p), "fields": {"text": "q", "label": "a"},
                                                          "label_map": {"NO": 0, "YES": 1}}))
    t.setup(tok)
    with pytest.raises(GuidetuneError) as e:
        t.dataset("eval")
    assert str(e.value) == f"{p}:2:17: label 'MAYBE' is not in label_map; label_map has: NO, YES"
    with pytest.raises(GuidetuneError, match=r"fields: 'txt' is not a field of this task. Did you mean 'text'\?"):
        build_plugin(TASKS, PluginSpec("classification", {"train": str(p), "fields": {"txt": "q"}}))
