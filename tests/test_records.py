"""The one record reader: layouts as published, field mapping, labels, and a one-line error per bad input."""
import json
from pathlib import Path

import pytest

from guidetune.errors import GuidetuneError
from guidetune.records import FieldMap, parse_pairs, read_lines, read_table

FIX = Path(__file__).parent / "fixtures"


def _one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(GuidetuneError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_csv_keeps_newlines_inside_quoted_prompts_and_reports_first_line():
    t = read_table(FIX / "inverse_scaling.csv")
    assert t.fields == ["prompt", "classes", "answer_index"]
    assert [r.line for r in t] == [2, 6, 10, 16]  # each record's first line (records span 4-6 lines)
    assert t.records[0].values == {"prompt": "Question: Which is not a metal?\nA. wood\nB. steel\nAnswer:",
                                   "classes": "[' A', ' B']", "answer_index": "0"}
    assert t.records[3].values["prompt"].startswith('Question: Which of these never flies, "penguin" or "eagle"?\n')


def test_cp1252_file_read_as_utf8_names_byte_and_suggests_cp1252():
    path = FIX / "nli_negation_cp1252.tsv"
    msg = _one_line_error(read_table, path)
    # "premise\thypothesis\tgold\n" is 24 bytes, "The caf" 7 more: byte 31 is 0xe9 (é in cp1252)
    assert msg == f"{path}: byte 31 (line 2, 0xe9) is not valid utf-8; try encoding: cp1252"
    t = read_table(path, encoding="cp1252")
    assert t.records[0].values["premise"] == "The caf\u00e9 is not open."
    assert t.records[1].values["premise"] == "He didn\u2019t say \u201cno\u201d."  # curly quotes, no quote processing
    lines = read_lines(path, encoding="utf-8")
    assert _one_line_error(list, lines) == f"{path}: byte 31 (line 2, 0xe9) is not valid utf-8; try encoding: cp1252"


def test_tsv_reads_bare_quotes_literally(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text('text\tlabel\n"Hello," he said.\t1\n')
    assert read_table(p).records[0].values == {"text": '"Hello," he said.', "label": "1"}
    # with CSV quoting the same line is malformed: why .tsv files default to quoting: none
    assert _one_line_error(read_table, p, quoting="minimal") == f"{p}:2: bad CSV quoting ('\t' expected after '\"')"


def test_json_layouts(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    (tmp_path / "list.json").write_text("[\n  " + ",\n  ".join(json.dumps(r) for r in rows) + "\n]\n")
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": rows}, indent=1))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = {n: [(r.line, r.values) for r in read_table(tmp_path / n)] for n in ("list.json", "wrapped.json", "lines.json")}
    assert got["list.json"] == [(2, {"a": 1}), (3, {"a": 2})]
    assert got["lines.json"] == [(1, {"a": 1}), (2, {"a": 2})]
    assert [v for _, v in got["wrapped.json"]] == rows and got["wrapped.json"][0][0] == 4


def test_field_mapping_and_label_map():
    t = read_table(FIX / "inverse_scaling_reformatted.jsonl")
    fm = FieldMap(t, {"prompt": "prompt", "answer_index": "answer_index"}, {"prompt": "input", "answer_index": "label"},
                  label_map={"A": 0, "B": 1, "C": 2, "D": 3})
    assert [fm.label(r, "answer_index") for r in t] == [0, 0, 2, 0]
    assert fm.text(t.records[0], "prompt").endswith("B. steel\nAnswer:")


def test_jsonl_null_and_empty_are_reported_as_such(tmp_path):
    path = FIX / "negation_qa_nulls.jsonl"
    t = read_table(path)
    fm = FieldMap(t, {"text": "question", "label": "answer"}, label_map={"YES": 1, "NO": 0})
    assert [fm.label(r, "label") for r in t.records[:2]] == [0, 1]
    # line 3: {"question": "Is fire never hot?", "answer": null}; "answer" starts at character 36
    assert _one_line_error(fm.label, t.records[2], "label") == f"{path}:3:36: field 'answer' is null"
    p = tmp_path / "e.csv"
    p.write_text("text,label\nok,1\n,0\n")
    t = read_table(p)
    fm = FieldMap(t, {"text": "text"})
    assert _one_line_error(fm.text, t.records[1], "text") == f"{p}:3:1: field 'text' is empty"
    assert fm.missing(t.records[1], "text") == "empty" and fm.missing(t.records[0], "text") is None


# ---- one bad input, one line, the file named --------------------------------------------------------------
def test_unclosed_quote_names_the_line_it_opened_on(tmp_path):
    p = tmp_path / "mc.csv"
    p.write_text('prompt,classes,answer_index\n"ok","[\' a\', \' b\']",0\n"Question: never closed\nA. x\nB. y\n')
    assert _one_line_error(read_table, p) == f"{p}:3: a quoted field opened in this record never closes"
    # more quotes after the open one: the csv module stops where they stop making sense; both lines named
    p.write_text('prompt,classes,answer_index\n"Question: never closed\nA. x\n,"[1]",0\n"next","[2]",1\n')
    assert _one_line_error(read_table, p) == (f"{p}:4: bad CSV quoting (',' expected after '\"'); the record began "
                                             "on line 2, is a quote left open there?")


def test_mapping_naming_a_missing_field_lists_the_fields_there():
    t = read_table(FIX / "inverse_scaling_reformatted.jsonl")
    msg = _one_line_error(FieldMap, t, {"prompt": "prompt"}, {"prompt": "question"})
    assert msg == (f"{t.path}: fields.prompt names 'question', which is not a field of this file. "
                   "Did you mean 'options'? Fields there: id, input, label, options")
    msg = _one_line_error(FieldMap, t, {"prompt": "prompt"})
    assert msg == (f"{t.path}: no field 'prompt' for prompt (fields there: input, options, label, id); "
                   "map one with fields: {prompt: FIELD}")


def test_label_not_in_label_map(tmp_path):
    p = tmp_path / "nli.csv"
    p.write_text("premise,label\na,entailment\nb,neutral\n")
    t = read_table(p)
    fm = FieldMap(t, {"label": "label"}, label_map={"entailment": 0, "not_entailment": 1})
    assert _one_line_error(fm.label, t.records[1], "label") == (
        f"{p}:3:2: label 'neutral' is not in label_map; label_map has: entailment, not_entailment")


@pytest.mark.parametrize("name,text,message", [
    ("empty.jsonl", "", "the file is empty"),
    ("blank.csv", "\n\n", "the file is empty"),
    ("header.csv", "prompt,classes\n", "the file holds no records (only a header)"),
])
def test_empty_files(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    assert _one_line_error(read_table, p) == f"{p}: {message}"


def test_directory_where_a_file_is_expected(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n')
    assert _one_line_error(read_table, tmp_path, "task.eval") == (
        f"task.eval: '{tmp_path}' is a directory; give a data file (it holds train.jsonl)")


def test_other_row_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b\n1,2\n1,2,3\n")
    assert _one_line_error(read_table, p) == f"{p}:3: 3 columns, the header has 2"
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    assert _one_line_error(read_table, p) == f"{p}:2: expected a JSON object per line, got list"
    p = tmp_path / "d.txt"
    p.write_text("a,b\n")
    assert "cannot tell the format" in _one_line_error(read_table, p)
    assert _one_line_error(read_table, FIX / "inverse_scaling.csv", encoding="klingon") == (
        "encoding: unknown encoding 'klingon' (e.g. utf-8, cp1252, latin-1)")


def test_parse_pairs():
    assert parse_pairs("prompt=input, classes=options,answer_index=label") == {
        "prompt": "input", "classes": "options", "answer_index": "label"}
    assert _one_line_error(parse_pairs, "prompt") == (
        "--fields: expected name=field pairs separated by commas, got 'prompt'")
