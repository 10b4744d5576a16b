"""Every bad input is one line on stderr, exit code 2, no traceback, the field or file named, nothing written.

One row per case: (id, argv, expected text). ``{name}`` in argv is a path of the workspace below; ``{ok}``
is a valid config. Each case runs the real ``guidetune.cli.main`` in-process, and the whole workspace is
compared before and after, so a half-written file, a temp file or a directory left behind fails the row.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pathlib import Path
import yaml

from conftest import tiny_config, write_jsonl
from guidetune.cli import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_dirs, cls_data):
    """The workspace: a tiny model, data, a finished run, a finished one-cell sweep and many bad files."""
    root = tmp_path_factory.mktemp("ws")
    w = {"root": root, "model": tiny_dirs["bert"], "train": cls_data["train"], "eval": cls_data["eval"]}
    w["ok"] = tiny_config(root, tiny_dirs["bert"], cls_data, name="ok", train={"max_steps": 1})
    assert main(["train", str(w["ok"])]) == 0
    w["run"] = root / "runs" / "ok"
    (root / "notes.txt").write_text("just a note\n")
    (root / "emptydir").mkdir()
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    (root / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (root / "syntax.yaml").write_text("name: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "empty.jsonl").write_text("")
    (root / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    (root / "notobjects.jsonl").write_text("[1, 2]\n")
    (root / "nolabel.jsonl").write_text('{"text": "hello"}\n')
    (root / "empty.txt").write_text("\n\n")
    (root / "concepts_bad.yaml").write_text("- just\n- a list\n")
    np.save(root / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    corrupt = root / "corrupt_model"
    shutil.copytree(tiny_dirs["bert"], corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    # A run that never finished (config only), one whose config asks for remote code, one with bad files.
    for name, edit in [("nomodel", None), ("trusting", "trust"), ("badresults", "results")]:
        d = root / "runs" / name
        d.mkdir(parents=True)
        cfg = yaml.safe_load(w["ok"].read_text())
        if edit == "trust":
            cfg["model"]["trust_remote_code"] = True
            shutil.copytree(w["run"] / "model", d / "model")
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        if edit == "results":
            (d / "results.json").write_text("{not json")
    (root / "runs" / "binaryconfig").mkdir()
    (root / "runs" / "binaryconfig" / "config.yaml").write_bytes(b"\xff\xfe\xfa")
    (root / "runs" / "binaryconfig" / "model").mkdir()
    sweep = {"base": w["ok"].name, "name": "sw", "seeds": [0]}
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(root / "sweep.yaml")]) == 0
    for name, extra in [("sweep_metric", {"metrics": ["acuracy"]}), ("sweep_emptygrid", {"grid": {"train.lr": []}}),
                        ("sweep_nobase", {"base": "nowhere.yaml"}), ("sweep_field", {"bogus": 1}),
                        ("sweep_plot", {"grid": {"train.lr": [0.1]}, "plot": {"x": "train.l", "metric": "f1"}}),
                        ("sweep_variant", {"variants": [{"label": "v", "set": {"train.lrr": 1}}]}),
                        ("sweep_noseeds", {"seeds": []})]:
        (root / f"{name}.yaml").write_text(yaml.safe_dump({**sweep, **extra}))
    write_jsonl(root / "corpus.jsonl", [{"text": "not good at all"}, {"text": "never bad"}])
    return w


def fill(text: str, names: dict[str, str]) -> str:
    for k, v in names.items():
        text = text.replace("{" + k + "}", v)
    return text


def snapshot(root):
    """Every file with its size and mtime, and every directory (whose own mtime changes when an entry is
    created and removed again, which leaves nothing behind)."""
    return sorted((str(p.relative_to(root)),) + ((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else ())
                  for p in root.rglob("*"))


T, V, E, S, R = "train", "validate", "eval", "sweep", "report"
AN, AA, AL = ["analyze", "neurons"], ["analyze", "attention"], ["analyze", "landscape"]
CASES = [
    # --- train: the config file itself
    ("train-missing-file", [T, "{root}/missing.yaml"], "config file not found: "),
    ("train-directory-as-config", [T, "{emptydir}"], "is a directory"),
    ("train-binary-yaml", [T, "{root}/binary.yaml"], "binary.yaml: not a UTF-8 text file"),
    ("train-latin1-yaml", [T, "{root}/latin1.yaml"], "latin1.yaml: not a UTF-8 text file"),
    ("train-yaml-syntax", [T, "{root}/syntax.yaml"], "YAML syntax error at"),
    ("train-yaml-list", [T, "{root}/list.yaml"], "the top level must be a mapping"),
    # --- train: fields and overrides
    ("train-override-no-equals", [T, "{ok}", "train.lr"], "override 'train.lr': expected key=value"),
    ("train-override-unknown-top", [T, "{ok}", "trian.lr=1"], "unknown field 'trian'. Did you mean 'train'?"),
    ("train-override-unknown-field", [T, "{ok}", "train.learning_rate=1"], "Did you mean 'lr'?"),
    ("train-negative-lr", [T, "{ok}", "train.lr=-1"], "train.lr: must be > 0, got -1"),
    ("train-zero-batch", [T, "{ok}", "train.batch_size=0"], "train.batch_size: must be > 0, got 0"),
    ("train-data-fraction-2", [T, "{ok}", "train.data_fraction=2"], "train.data_fraction: must be in (0, 1]"),
    ("train-seed-string", [T, "{ok}", "seed=abc"], "seed: expected an integer, got 'abc'"),
    ("train-name-escapes", [T, "{ok}", "name=../../x"], "name: must be a relative path inside output_dir"),
    ("train-name-absolute", [T, "{ok}", "name=/tmp/x"], "name: must be a relative path inside output_dir"),
    ("train-output-dir-under-file", [T, "{ok}", "output_dir={root}/notes.txt/runs"], "notes.txt' is a file"),
    ("train-head-unknown", [T, "{ok}", "model.head=clasification"], "Did you mean 'classification'?"),
    ("train-mode-unknown", [T, "{ok}", "finetune.mode=lorra"], "finetune.mode: got 'lorra'"),
    ("train-lora-r-0", [T, "{ok}", "finetune.lora_r=0"], "finetune.lora_r: must be > 0, got 0"),
    ("train-unknown-regularizer", [T, "{ok}", "regularizers=[{name: l2}]"], "unknown regularizer 'l2'"),
    ("train-negative-weight", [T, "{ok}", "regularizers=[{name: l1, weight: -1}]"], "weight: must be >= 0"),
    ("train-regularizer-field", [T, "{ok}", "regularizers=[{name: l1, layer: x}]"], "regularizers[0].layer: unknown"),
    ("train-unknown-layer", [T, "{ok}", "name=ul", "regularizers=[{name: l1, layers: [encoder.fina]}]"],
     "encoder.fina"),
    ("train-unknown-task", [T, "{ok}", "task.name=clasification"], "unknown task 'clasification'"),
    ("train-existing-run", [T, "{ok}"], "already exists; pass --resume"),
    ("train-changed-run", [T, "{ok}", "train.lr=0.5"], "changed: train.lr); pass --rerun-changed"),
    # --- train: data and model files
    ("train-data-missing", [T, "{ok}", "name=x1", "task.train={root}/none.jsonl"], "none.jsonl"),
    ("train-data-directory", [T, "{ok}", "name=x2", "task.train={emptydir}"], "emptydir"),
    ("train-data-empty-jsonl", [T, "{ok}", "name=x3", "task.train={root}/empty.jsonl"], "empty.jsonl"),
    ("train-data-binary-jsonl", [T, "{ok}", "name=x4", "task.train={root}/binary.jsonl"], "binary.jsonl"),
    ("train-data-not-objects", [T, "{ok}", "name=x5", "task.train={root}/notobjects.jsonl"], "notobjects.jsonl:1"),
    ("train-data-no-label", [T, "{ok}", "name=x6", "task.train={root}/nolabel.jsonl"], "nolabel.jsonl"),
    ("train-model-missing", [T, "{ok}", "name=x7", "model.name=./nowhere"], "no such directory './nowhere'"),
    ("train-model-is-file", [T, "{ok}", "name=x8", "model.name={root}/notes.txt"], "notes.txt' is a file"),
    ("train-model-empty-dir", [T, "{ok}", "name=x9", "model.name={emptydir}"], "has no config.json"),
    ("train-model-corrupt", [T, "{ok}", "name=x10", "model.name={root}/corrupt_model"], "corrupt_model"),
    ("train-attention-matrix-object-npy", [T, "{ok}", "name=x11",
                                           "regularizers=[{name: attention_guidance, pattern: matrix, matrix: {root}/object.npy}]"],
     "object.npy"),
    # --- validate
    ("validate-garbage", [V, "{root}/binary.yaml"], "not a UTF-8 text file"),
    ("validate-missing", [V, "{root}/missing.yaml"], "config file not found"),
    ("validate-directory", [V, "{emptydir}"], "is a directory"),
    ("validate-data-missing", [V, "{ok}", "task.train={root}/none.jsonl"], "task.train: not found"),
    ("validate-data-directory", [V, "{ok}", "task.train={emptydir}"], "is a directory; give a data file"),
    ("validate-quick-weight-typo", [V, "--quick", "{ok}", "regularizers=[{name: l1, weigth: 2}]"],
     "regularizers[0].weigth: unknown field. Did you mean 'weight'?"),
    ("validate-data-empty", [V, "{ok}", "task.train={root}/empty.jsonl"], "empty.jsonl"),
    ("validate-name-escapes", [V, "{ok}", "name=a/../../b"], "name: must be a relative path"),
    ("validate-output-under-file", [V, "{ok}", "output_dir={root}/notes.txt"], "notes.txt' is a file"),
    ("validate-corrupt-model", [V, "{ok}", "model.name={root}/corrupt_model"], "corrupt_model"),
    # --- eval
    ("eval-not-a-run", [E, "{root}/nowhere"], "not a run directory (no config.yaml)"),
    ("eval-file", [E, "{root}/notes.txt"], "not a run directory"),
    ("eval-batch-size-0", [E, "{run}", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    ("eval-mc-on-an-encoder", [E, "{model}", "--task", "multiple_choice", "--data",
                               str(Path(__file__).parent / "fixtures" / "inverse_scaling.csv"), "--out", "{root}/mc"],
     "is not a causal language model here"),
    ("eval-batch-size-text", [E, "{run}", "--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
    ("eval-unfinished", [E, "{root}/runs/nomodel"], "has no saved model yet"),
    ("eval-remote-code", [E, "{root}/runs/trusting"], "pass --trust-remote-code"),
    ("eval-binary-config", [E, "{root}/runs/binaryconfig"], "config.yaml: not a UTF-8 text file"),
    # --- sweep
    ("sweep-missing", [S, "{root}/missing.yaml"], "config file not found"),
    ("sweep-empty-grid", [S, "{root}/sweep_emptygrid.yaml"], "grid.train.lr: expected a non-empty list"),
    ("sweep-no-seeds", [S, "{root}/sweep_noseeds.yaml"], "seeds: expected at least one seed"),
    ("sweep-missing-base", [S, "{root}/sweep_nobase.yaml"], "nowhere.yaml"),
    ("sweep-unknown-field", [S, "{root}/sweep_field.yaml"], "sweep.bogus: unknown field"),
    ("sweep-plot-x", [S, "{root}/sweep_plot.yaml"], "plot.x: 'train.l' is not a grid key"),
    ("sweep-variant-key", [S, "{root}/sweep_variant.yaml"], "train.lrr: unknown field. Did you mean 'lr'?"),
    ("sweep-misspelt-metric", [S, "{root}/sweep_metric.yaml"], "'acuracy' is not a metric of these runs. Did you mean"),
    ("sweep-bad-seeds", [S, "{root}/sweep.yaml", "--seeds", "0,x"], "--seeds: expected comma-separated integers"),
    # --- report
    ("report-not-a-run", [R, "{root}/nowhere"], "not a run directory"),
    ("report-out-is-directory", [R, "{run}", "--out", "{emptydir}"], "is a directory"),
    ("report-out-under-file", [R, "{run}", "--out", "{root}/notes.txt/r.html"], "notes.txt' is a file"),
    ("report-corrupt-results", [R, "{root}/runs/badresults", "--out", "{root}/r.html"], "results.json"),
    ("report-binary-config", [R, "{root}/runs/binaryconfig", "--out", "{root}/r.html"], "not a UTF-8 text file"),
    # --- analyze neurons
    ("neurons-quantile-2", [*AN, "{model}", "--quantile", "2", "--out", "{root}/n"], "quantile"),
    ("neurons-corpus-missing", [*AN, "{model}", "--corpus", "{root}/none.txt", "--out", "{root}/n"], "none.txt"),
    ("neurons-corpus-binary", [*AN, "{model}", "--corpus", "{root}/binary.jsonl", "--out", "{root}/n"],
     "binary.jsonl"),
    ("neurons-corpus-empty", [*AN, "{model}", "--corpus", "{root}/empty.txt", "--out", "{root}/n"], "empty.txt"),
    ("neurons-corpus-directory", [*AN, "{model}", "--corpus", "{emptydir}", "--out", "{root}/n"], "emptydir"),
    ("neurons-concepts-list", [*AN, "{model}", "--concepts", "{root}/concepts_bad.yaml", "--out", "{root}/n"],
     "concepts_bad.yaml"),
    ("neurons-layer", [*AN, "{model}", "--layer", "encoder.layers.0.attn.probs", "--out", "{root}/n"], "--layer"),
    ("neurons-out-is-file", [*AN, "{model}", "--out", "{root}/notes.txt"], "--out: "),
    ("neurons-out-foreign-dir", [*AN, "{model}", "--out", "{root}/runs"], "not a guidetune output set"),
    ("neurons-compare-missing", [*AN, "{model}", "--compare", "./nowhere", "--out", "{root}/n"], "./nowhere"),
    ("neurons-model-corrupt", [*AN, "{root}/corrupt_model", "--out", "{root}/n"], "corrupt_model"),
    # --- analyze attention
    ("attention-no-input", [*AA, "{model}", "--out", "{root}/a"], "give --corpus FILE or --sentence TEXT"),
    ("attention-token-set", [*AA, "{model}", "--corpus", "{root}/corpus.jsonl", "--token-set", "negatoin",
                             "--out", "{root}/a"], "negatoin"),
    ("attention-layers", [*AA, "{model}", "--sentence", "not bad", "--layers", "encoder.layers.7.attn.probs",
                          "--out", "{root}/a"], "encoder.layers.7"),
    ("attention-out-is-file", [*AA, "{model}", "--sentence", "not bad", "--out", "{root}/notes.txt"], "--out: "),
    ("attention-corpus-binary", [*AA, "{model}", "--corpus", "{root}/binary.jsonl", "--out", "{root}/a"],
     "binary.jsonl"),
    # --- analyze landscape
    ("landscape-model-without-config", [*AL, "{model}", "--out", "{root}/l"], "needs --config"),
    ("landscape-k-0", [*AL, "{run}", "--k", "0", "--out", "{root}/l"], "k: must be in (0, 100]"),
    ("landscape-steps-2", [*AL, "{run}", "--steps", "2", "--out", "{root}/l"], "steps: must be >= 3"),
    ("landscape-top-without-fisher", [*AL, "{run}", "--mask", "top", "--out", "{root}/l"], "needs --fisher"),
    ("landscape-out-is-file", [*AL, "{run}", "--out", "{root}/notes.txt"], "--out: "),
    ("landscape-corrupt-fisher", [*AL, "{run}", "--mask", "top", "--fisher", "{root}/binary.yaml", "--steps", "3",
                                  "--out", "{root}/l"], "binary.yaml"),
    ("landscape-fisher-missing", [*AL, "{run}", "--mask", "top", "--fisher", "{root}/none.safetensors",
                                  "--steps", "3", "--out", "{root}/l"], "none.safetensors"),
    # --- fisher (the command line; the Fisher files themselves are tested in test_fisher.py)
    ("fisher-model-missing", ["fisher", "./nowhere", "--data", "{root}/corpus.jsonl", "--objective", "mlm",
                              "--out", "{root}/f.safetensors"], "./nowhere"),
    ("fisher-objective", ["fisher", "{model}", "--data", "{root}/corpus.jsonl", "--objective", "mlmm",
                          "--out", "{root}/f.safetensors"], "mlmm"),
    ("fisher-data-missing", ["fisher", "{model}", "--data", "{root}/none.txt", "--objective", "task",
                             "--out", "{root}/f.safetensors"], "none.txt"),
    ("fisher-fraction-0", ["fisher", "{model}", "--data", "{train}", "--objective", "task",
                           "--fraction", "0", "--out", "{root}/f.safetensors"], "--fraction"),
    ("fisher-out-is-directory", ["fisher", "{model}", "--data", "{train}", "--objective", "task",
                                 "--out", "{emptydir}"], "--out"),
    ("fisher-reliability-text", ["fisher", "{model}", "--data", "{train}", "--objective", "task",
                                 "--reliability", "x,y", "--out", "{root}/f.safetensors"], "--reliability"),
    # --- ls and the command line itself
    ("ls-unknown-registry", ["ls", "regularisers"], "invalid choice: 'regularisers'"),
    ("ls-layers-no-model", ["ls", "layers"], "give a model"),
    ("ls-layers-missing", ["ls", "layers", "./nowhere"], "no such directory './nowhere'"),
    ("ls-layers-file", ["ls", "layers", "{root}/notes.txt"], "notes.txt' is a file"),
    ("ls-layers-corrupt", ["ls", "layers", "{root}/corrupt_model"], "corrupt_model"),
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["trian"], "invalid choice: 'trian'"),
]


@pytest.mark.parametrize("case,argv,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input(ws, capsys, case, argv, expect):
    root = ws["root"]
    names = {k: str(v) for k, v in ws.items()} | {"emptydir": str(root / "emptydir")}
    argv = [fill(a, names) for a in argv]
    before = snapshot(root)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert fill(expect, names) in err, err
    after = snapshot(root)
    assert after == before, f"files changed: {sorted(set(after) ^ set(before))[:4]}"


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({json.dumps(c[1]) for c in CASES}) == len(CASES)
