import csv

import pytest
import yaml

from conftest import tiny_config
from guidetune.cli import main
from guidetune.errors import ConfigError
from guidetune.sweep import plan, run_sweep


def _sweep(tmp_path, tiny_dirs, cls_data, **spec):
    base = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="base", train={"max_steps": 2})
    doc = {"base": base.name, "name": "sw", "seeds": [0, 1], **spec}
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_plan_crosses_variants_grid_and_seeds(tmp_path, tiny_dirs, cls_data, capsys):
    p = _sweep(tmp_path, tiny_dirs, cls_data, grid={"train.lr": [1e-3, 1e-4]},
               variants=[{"label": "plain"},
                         {"label": "l1", "set": {"regularizers": [{"name": "l1", "weight": 0.1}]}, "seeds": [5]}])
    _, runs = plan(p)
    assert [(r.label, r.seed) for r in runs] == [
        ("plain-lr=0.001", 0), ("plain-lr=0.001", 1), ("plain-lr=0.0001", 0), ("plain-lr=0.0001", 1),
        ("l1-lr=0.001", 5), ("l1-lr=0.0001", 5)]
    assert runs[-1].config.train.lr == 1e-4 and runs[-1].config.regularizers[0].weight == 0.1
    assert runs[0].config.run_dir == tmp_path / "runs" / "sw" / "plain-lr=0.001-s0"
    _, runs = plan(p, seeds=[3])  # --seeds replaces the file's seeds, per-variant ones included
    assert [(r.label, r.seed) for r in runs] == [
        ("plain-lr=0.001", 3), ("plain-lr=0.0001", 3), ("l1-lr=0.001", 3), ("l1-lr=0.0001", 3)]
    assert main(["sweep", str(p), "--seeds", "0,x", "--dry-run"]) != 0
    assert "--seeds: expected comma-separated integers such as 0,1,2, got '0,x'" in capsys.readouterr().err


def test_a_key_that_does_not_exist_is_named_with_a_suggestion(tmp_path, tiny_dirs, cls_data):
    p = _sweep(tmp_path, tiny_dirs, cls_data, variants=[{"label": "bad", "set": {"train.lrr": 1e-3}},
                                                        {"label": "worse", "set": {"trian.lr": 1e-3}}])
    with pytest.raises(ConfigError) as e:
        plan(p)
    text = "\n".join(e.value.messages)
    assert "sweep variant 'bad': train.lrr: unknown field. Did you mean 'lr'?" in text
    assert "sweep variant 'worse': override 'trian.lr': unknown field 'trian'. Did you mean 'train'?" in text


@pytest.mark.slow
def test_sweep_runs_skips_finished_and_summarizes(tmp_path, tiny_dirs, cls_data, capsys):
    p = _sweep(tmp_path, tiny_dirs, cls_data,
               variants=[{"label": "plain"}, {"label": "l1", "set": {"regularizers": [{"name": "l1", "weight": 0.1}]}}])
    out = run_sweep(p)
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["label"], r["seed"]) for r in rows] == [("plain", "0"), ("plain", "1"), ("l1", "0"), ("l1", "1")]
    summary = list(csv.DictReader((out / "summary.csv").open()))
    accs = [float(r["accuracy"]) for r in rows if r["label"] == "l1"]
    l1 = next(s for s in summary if s["label"] == "l1")
    assert float(l1["accuracy_mean"]) == pytest.approx(sum(accs) / 2)
    assert float(l1["accuracy_iqr"]) == pytest.approx(abs(accs[0] - accs[1]) / 2)  # numpy's linear quartiles
    assert "| l1 | 2 |" in (out / "summary.md").read_text()
    assert (out / "summary.png").stat().st_size > 1000
    capsys.readouterr()
    run_sweep(p)  # everything finished: nothing is retrained
    assert capsys.readouterr().out.count(": done") == 4


def test_report_is_self_contained_with_metrics_diffs_and_curves(tmp_path, tiny_dirs, cls_data, capsys):
    dirs = []
    for name, regs in [("a", []), ("b", [{"name": "l1", "weight": 0.1}])]:
        cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name=name, regularizers=regs,
                          train={"max_steps": 2, "logging_steps": 1})
        assert main(["train", str(cfg)]) == 0
        dirs.append(str(tmp_path / "runs" / name))
    out = tmp_path / "r.html"
    assert main(["report", *dirs, "--out", str(out)]) == 0
    page = out.read_text()
    assert "<h2>Metrics</h2>" in page and "accuracy" in page
    assert "regularizers.0.weight" in page  # the config difference between the runs
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


@pytest.mark.slow
def test_data_fraction_grid_and_line_plot(tmp_path, tiny_dirs, cls_data):
    p = _sweep(tmp_path, tiny_dirs, cls_data, seeds=[0], grid={"train.data_fraction": [0.5, 1.0]},
               plot={"x": "train.data_fraction", "metric": "accuracy"},
               variants=[{"label": "a"}, {"label": "b", "set": {"regularizers": [{"name": "dropout", "p": 0.2}]}}])
    out = run_sweep(p)
    import json

    ex = [json.loads((out / f"{v}-data_fraction={f}-s0" / "results.json").read_text())["train"]["examples"]
          for v in ("a", "b") for f in (0.5, 1.0)]
    assert ex == [18, 36, 18, 36]
    assert (out / "lines_accuracy.png").stat().st_size > 1000
    assert (out / "b-data_fraction=0.5-s0" / "dropout_schedule.json").exists()
    from guidetune.experiment import evaluate_run

    assert "accuracy" in evaluate_run(out / "a-data_fraction=0.5-s0")  # re-evaluating a sub-sampled run


def test_sweep_notices_changed_cells_and_reruns_them_only_when_asked(tmp_path, tiny_dirs, cls_data, capsys):
    p = _sweep(tmp_path, tiny_dirs, cls_data, seeds=[0], variants=[{"label": "a"}, {"label": "b"}])
    out = run_sweep(p)
    before = (out / "a-s0" / "results.json").read_text()
    doc = yaml.safe_load(p.read_text())
    doc["variants"][0]["set"] = {"train.lr": 0.01}  # only cell a changes
    p.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    code = main(["sweep", str(p)])
    io = capsys.readouterr()
    assert code == 2 and "[1/2] a seed 0: changed (train.lr)" in io.out and "[2/2] b seed 0: done" in io.out
    assert io.err == ("error: sweep: 1 run(s) were made with another configuration or data (a-s0); "
                      "pass --rerun-changed to run them again\n")
    assert (out / "a-s0" / "results.json").read_text() == before  # nothing touched
    assert main(["sweep", str(p), "--rerun-changed"]) == 0
    assert "lr: 0.01" in (out / "a-s0" / "config.yaml").read_text()
    assert (out / "a-s0" / "results.json").read_text() != before
    capsys.readouterr()
    assert main(["sweep", str(p), "--dry-run"]) == 0 and capsys.readouterr().out.count(": done") == 2


@pytest.mark.parametrize("spec,message", [
    ({"grid": {"train.lr": []}}, "grid.train.lr: expected a non-empty list of values, got []"),
    ({"seeds": []}, "seeds: expected at least one seed, got []"),
    ({"grid": {"train.lr": [1e-3]}, "plot": {"x": "train.l", "metric": "accuracy"}},
     "plot.x: 'train.l' is not a grid key. Did you mean 'train.lr'?"),
])
def test_sweep_spec_errors(tmp_path, tiny_dirs, cls_data, spec, message):
    p = _sweep(tmp_path, tiny_dirs, cls_data, **spec)
    with pytest.raises(ConfigError) as e:
        plan(p)
    assert any(message in m for m in e.value.messages), e.value.messages


def test_report_loss_panel_shows_the_task_loss_of_runs_without_regularizers():
    import base64
    import io

    from matplotlib.image import imread

    from guidetune.report import _task_loss, loss_curves

    plain = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}]
    guided = [{"step": 1, "loss": 1.0, "loss/task": 0.8, "loss/l1": 2.0}, {"step": 2, "loss": 0.9, "loss/task": 0.6,
                                                                          "loss/l1": 1.5}]
    assert [r["loss/task"] for r in _task_loss(plain)] == [0.9, 0.7]
    assert _task_loss(guided) == guided  # its own task loss, not the total
    uri = loss_curves([("plain", plain), ("l1", guided)], model="model tiny")
    png = imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert png.shape[1] > 2 * png.shape[0]  # two panels side by side: loss/task and loss/l1


@pytest.mark.slow
def test_sweep_line_plot_uses_a_log_axis_for_a_log_grid(tmp_path, tiny_dirs, cls_data):
    import matplotlib.pyplot as plt

    from guidetune import sweep

    p = _sweep(tmp_path, tiny_dirs, cls_data, seeds=[0], grid={"train.lr": [1e-4, 1e-3, 1e-2]},
               plot={"x": "train.lr", "metric": "accuracy"})
    seen = {}
    real = plt.Figure.savefig

    def spy(fig, *a, **k):
        for ax in fig.axes:
            seen[ax.get_title()] = (ax.get_xscale(), ax.get_xlabel(), ax.get_ylabel())
        return real(fig, *a, **k)

    plt.Figure.savefig = spy
    try:
        out = sweep.run_sweep(p)
    finally:
        plt.Figure.savefig = real
    assert seen["sw: accuracy against lr"] == ("log", "train.lr (log scale)",
                                               "accuracy (mean over seeds; band: inter-quartile range)")
    assert (out / "lines_accuracy.png").stat().st_size > 1000


def test_summary_keeps_metrics_ending_in_n_and_drops_counts():
    from guidetune.sweep import _flatten

    row = _flatten({"metrics": {"pearson": 0.5, "spearman": 0.4, "accuracy_plain": 0.9, "n": 10,
                                "n_items": 3, "multihop_checks": 7, "truncated_items": 1}})
    assert row == {"pearson": 0.5, "spearman": 0.4, "accuracy_plain": 0.9}
