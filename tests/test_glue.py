"""GLUE layouts, with our own small fixtures in each format (real GLUE files are not provided)."""
import pytest

from conftest import tiny_config
from guidetune.config import PluginSpec, build_plugin, load_config
from guidetune.errors import GuidetuneError
from guidetune.tasks import TASKS

FIXTURES = {
    "rte": ("index\tsentence1\tsentence2\tlabel\n", "{i}\tA \"quoted\" man walks {w}.\tSomeone walks.\t{lab}\n",
            ["entailment", "not_entailment"]),
    "mrpc": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n", "{lab}\t{i}\t{i}1\tHe said {w}.\tHe stated {w}.\n",
             ["0", "1"]),
    "cola": ("", "src{i}\t{lab}\t\tThe cat {w} the mat.\n", ["0", "1"]),
    "stsb": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n",
             "{i}\tmain\tf\t2012\t{i}\tnone\tnone\tA dog {w}.\tA puppy {w}.\t{lab}\n", ["0.5", "4.25"]),
    "sst2": ("sentence\tlabel\n", "a {w} film\t{lab}\n", ["0", "1"]),
}
WORDS = ["runs", "sits", "eats", "jumps", "sleeps", "reads"]


def _write(d, task):
    head, row, labels = FIXTURES[task]
    d.mkdir(parents=True, exist_ok=True)
    body = "".join(row.format(i=i, w=w, lab=labels[i % 2]) for i, w in enumerate(WORDS))
    for name in ("train.tsv", "dev.tsv"):
        (d / name).write_text(head + body, encoding="utf-8")
    return d


@pytest.mark.parametrize("task", list(FIXTURES))
def test_each_layout_reads(tmp_path, tok, task):
    t = build_plugin(TASKS, PluginSpec("classification", {"glue_task": task, "glue_dir": str(_write(tmp_path / task, task))}))
    t.setup(tok)
    feats = t.dataset("train")
    assert len(feats) == 6
    if task == "stsb":
        assert t.regression and t.num_labels() == 1 and [f["labels"] for f in feats[:2]] == [0.5, 4.25]
    else:
        assert t.num_labels() == 2 and {f["labels"] for f in feats} == {0, 1}
    text = tok.decode(feats[0]["input_ids"])
    if task == "rte":
        assert '" quoted "' in text and text.count("[SEP]") == 2  # quotes kept, sentence pair
    if task == "mrpc":
        assert text.startswith("[CLS] he said runs")  # the BOM does not leak into the header


@pytest.mark.parametrize("task,metrics", [("cola", {"accuracy", "mcc"}), ("stsb", {"pearson", "spearman"}),
                                          ("mrpc", {"accuracy", "f1"})])
def test_metrics_per_task(tmp_path, tiny_dirs, task, metrics):
    from guidetune.experiment import run_training

    d = _write(tmp_path / task, task)
    cfg = load_config(tiny_config(tmp_path, tiny_dirs["bert"], {}, name=task,
                                  task={"name": "classification", "glue_task": task, "glue_dir": str(d)},
                                  train={"max_steps": 2}))
    res = run_training(cfg)
    assert metrics <= set(res["metrics"])


def test_missing_dev_and_wrong_columns(tmp_path, tok):
    d = _write(tmp_path / "rte", "rte")
    (d / "dev.tsv").unlink()
    t = build_plugin(TASKS, PluginSpec("classification", {"glue_task": "rte", "glue_dir": str(d)}))
    t.setup(tok)
    with pytest.raises(GuidetuneError, match=r"has no dev.tsv or dev_matched.tsv \(a GLUE RTE directory holds"):
        t.dataset("eval")
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tentailment\n")
    t2 = build_plugin(TASKS, PluginSpec("classification", {"glue_task": "rte", "glue_dir": str(d)}))
    with pytest.raises(GuidetuneError, match=r"train.tsv:3: 3 columns, the header has 4"):
        t2.setup(tok)
    with pytest.raises(GuidetuneError, match="no such directory"):
        build_plugin(TASKS, PluginSpec("classification", {"glue_task": "rte", "glue_dir": str(tmp_path / "x")})).setup(tok)
