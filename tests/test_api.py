"""The Python API: guidetune.train / load_run / evaluate / analyze.neurons, Capture aliases, a light import."""
import json
import subprocess
import sys

import pytest

from conftest import tiny_config


def test_import_guidetune_and_cli_help_do_not_import_torch():
    code = ("import sys, guidetune, guidetune.cli\n"
            "guidetune.cli.parser().format_help()\n"
            "assert guidetune.__version__ and 'train' in guidetune.__all__\n"
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_train_rerun_a_cell_evaluate_and_load(tmp_path, tiny_dirs, cls_data):
    import guidetune
    from guidetune.errors import GuidetuneError

    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="nb")
    run = guidetune.train(cfg, train__max_steps=2, **{"regularizers": [{"name": "l1", "weight": 0.1}]})
    assert isinstance(run, guidetune.Run) and run.path == tmp_path / "runs" / "nb"
    assert run.config.train.max_steps == 2 and run.config.regularizers[0].name == "l1"
    assert run.results == json.loads((run.path / "results.json").read_text())
    assert run.metrics()[-1]["step"] == 2
    with pytest.raises(GuidetuneError, match="already exists; pass --resume"):
        guidetune.train(cfg, train__max_steps=2, regularizers=[{"name": "l1", "weight": 0.1}])
    again = guidetune.train(cfg, resume=True, train__max_steps=2, regularizers=[{"name": "l1", "weight": 0.1}])
    assert again.results == run.results  # finished with the same config: returned, not retrained
    with pytest.raises(GuidetuneError, match=r"changed: train.max_steps\); pass --rerun-changed"):
        guidetune.train(cfg, resume=True, train__max_steps=3, regularizers=[{"name": "l1", "weight": 0.1}])
    third = guidetune.train(cfg, overwrite=True, train__max_steps=3)
    assert third.results["train"]["steps"] == 3 and not third.config.regularizers
    metrics = guidetune.evaluate(third)
    assert metrics["accuracy"] == third.results["metrics"]["accuracy"]
    loaded_cfg, task, model, tok = guidetune.load_run(third.path)
    assert loaded_cfg.train.max_steps == 3 and not loaded_cfg.model.trust_remote_code
    assert guidetune.open_run(third.path).results["eval"] == metrics
    with pytest.raises(GuidetuneError, match="config_or_path: expected a YAML path"):
        guidetune.train(42)


def test_analyze_neurons_writes_an_output_set_with_a_manifest(tmp_path, tiny_dirs):
    import guidetune
    from guidetune.errors import GuidetuneError
    from guidetune.runs import read_manifest, sha256_file

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\nthe dog ran\nstocks fell on the market\n")
    out = tmp_path / "n"
    res = guidetune.analyze.neurons(str(tiny_dirs["bert"]), out=str(out), corpus=str(corpus),
                                    layer="encoder.layers.0.ffn.act", min_support=1)
    assert res["models"]["bert"]["sentences"] == 3
    man = read_manifest(out, verify=True)
    assert "summary.json" in man["files"] and "manifest.json" not in man["files"]
    assert man["files"]["summary.json"]["sha256"] == sha256_file(out / "summary.json")
    assert man["inputs"]["corpus"]["sha256"] == sha256_file(corpus)
    assert man["inputs"]["models"][0]["path"] == str(tiny_dirs["bert"].resolve())
    (out / "summary.json").write_text("{}")
    with pytest.raises(GuidetuneError, match="summary.json' listed in manifest.json is missing or changed"):
        read_manifest(out)
    with pytest.raises(GuidetuneError, match="not a complete guidetune output set"):
        read_manifest(tmp_path)
    with pytest.raises(GuidetuneError, match="quantile: must be in"):
        guidetune.analyze.neurons(str(tiny_dirs["bert"]), out=str(out), quantile=2.0)


def test_output_set_is_all_or_nothing_and_files_follow_the_umask(tmp_path):
    import os

    from guidetune.runs import atomic_write, output_set, read_manifest

    target = tmp_path / "set"
    with output_set(target, {"model": "m"}) as d:
        atomic_write(d / "a.txt", "first")
    with pytest.raises(RuntimeError), output_set(target) as d:
        atomic_write(d / "b.txt", "half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "manifest.json"]  # the old set, whole
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temp directory left
    assert read_manifest(target)["inputs"] == {"model": "m"}
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "shared.txt", "x")
        assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_capture_reads_aliases(make_model, tok):
    import torch

    from guidetune import Capture

    model = make_model("bert")
    batch = tok(["a small test"], return_tensors="pt")
    with Capture(model, ["encoder.layers.1.out"], detach=True) as cap, torch.no_grad():
        model(**batch)
    assert cap["encoder.final"] is cap["encoder.layers.1.out"] is cap["final"]
    with pytest.raises(KeyError, match="'encoder.layers.0.out' was not captured"):
        cap["encoder.first"]


def test_no_exported_function_shares_its_name_with_a_submodule():
    """Importing a submodule sets it as an attribute of the package: a module guidetune/evaluate.py would
    replace the function guidetune.evaluate as soon as anything imported it (it did, once)."""
    from pathlib import Path

    import guidetune

    root = Path(guidetune.__file__).parent
    for name in guidetune._LAZY:
        assert not (root / f"{name}.py").exists() and not (root / name).is_dir(), name
    import guidetune.task_eval  # noqa: F401  (the module behind `guidetune eval --task`)

    assert callable(guidetune.evaluate) and guidetune.evaluate.__module__ == "guidetune.api"
