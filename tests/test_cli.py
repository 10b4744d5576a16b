import re

import pytest
import yaml

from conftest import tiny_config
from guidetune.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind,expect", [
    ("bert", [r"encoder.layers.1.attn.probs\s+bert.encoder.layer.1.attention.self\s+\[batch, 4, query, key\]",
              "encoder.layers.0.ffn.act", "[batch, seq, 64]"]),
    ("gpt2", ["decoder.layers.1.ffn.act", "transformer.h.1.mlp.c_proj", "[batch, seq, 128]"]),
    ("llama", ["decoder.layers.0.attn.probs", "model.layers.0.self_attn", "[batch, seq, 64]"]),
    ("t5", ["decoder.layers.1.cross_attn.probs", "decoder.block.1.layer.1.EncDecAttention",
            "encoder.layers.0.out"]),
])
def test_ls_layers_prints_canonical_names_paths_and_shapes(capsys, tiny_dirs, kind, expect):
    head = {"bert": "classification", "t5": "seq2seq_lm"}.get(kind, "causal_lm")
    code, out, _ = run_cli(capsys, "ls", "layers", str(tiny_dirs[kind]), "--head", head)
    assert code == 0
    for text in expect:
        assert re.search(text if "\\s" in text else re.escape(text), out), text


def test_ls_layers_minilm(capsys):
    code, out, _ = run_cli(capsys, "ls", "layers", "minilm")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 6 * 5
    assert "encoder.layers.5.ffn.act" in out and "[batch, seq, 1536]" in out and "[batch, 12, query, key]" in out


def test_ls_registries(capsys):
    code, out, _ = run_cli(capsys, "ls")
    assert code == 0 and "l1" in out and "hoyer" in out and "classification" in out
    code, out, _ = run_cli(capsys, "ls", "regularizers")
    assert "tokens" in out and "all | last | eos | answer | entity" in out


def test_validate_reports_every_error_with_exit_code_2(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, regularizers=[
        {"name": "l1", "weight": 1.0, "layers": ["encoder.layers.9.out"]},
        {"name": "hoyer", "weight": 1.0, "layers": ["encoder.fina"]}])
    code, out, err = run_cli(capsys, "validate", str(p))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: regularizers[0].layers: unknown layer name 'encoder.layers.9.out'")
    assert "Did you mean 'encoder.final'?" in lines[1] or "encoder.fina" in lines[1]
    code, out, _ = run_cli(capsys, "validate", str(tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="ok")))
    assert code == 0 and out.strip().endswith(": OK")


def test_validate_config_and_data_errors_together(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, train={"lr": -1.0}, bogus=1)
    code, _, err = run_cli(capsys, "validate", str(p))
    assert code == 2 and "train.lr: must be > 0" in err and "bogus: unknown field" in err


def test_train_and_eval_from_the_cli(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="cli")
    code, out, _ = run_cli(capsys, "train", str(p), "train.max_steps=2", "regularizers=[{name: l1, weight: 0.1}]")
    assert code == 0 and "\ncli: accuracy=" in out
    saved = yaml.safe_load((tmp_path / "runs" / "cli" / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["regularizers"][0]["weight"] == 0.1
    code, out, _ = run_cli(capsys, "train", str(p))
    assert code == 2  # the run exists: say how to resume instead of overwriting it
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "runs" / "cli"))
    assert code == 0 and "accuracy=" in out


@pytest.mark.parametrize("argv,message", [
    (["train", "missing.yaml"], "error: config file not found: 'missing.yaml'"),
    (["ls", "layers", "./nowhere"], "error: model.name: no such directory './nowhere'"),
    (["eval", "./not-a-run"], "error: not a run directory (no config.yaml): './not-a-run'"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1


def test_unknown_regularizer_and_negative_weight_on_the_command_line(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="bad")
    code, _, err = run_cli(capsys, "train", str(p), "regularizers=[{name: l2, weight: -1}]")
    assert code == 2
    assert "error: regularizers[0].weight: must be >= 0, got -1.0" in err
    assert "error: regularizers[0].name: unknown regularizer 'l2'. Did you mean 'l1'?" in err


def test_help_on_each_command(capsys):
    for cmd in ["train", "eval", "validate", "ls", "demo"]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: guidetune " + cmd in capsys.readouterr().out


def test_validate_checks_data_paths_and_task_files(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="v",
                    task={"name": "beliefbank", "data": str(tmp_path / "nowhere")},
                    regularizers=[{"name": "fisher_dropout", "fisher": str(tmp_path / "f.safetensors")}],
                    eval_tasks=[{"name": "multiple_choice", "eval": str(tmp_path / "mc.jsonl")}])
    code, _, err = run_cli(capsys, "validate", str(p))
    assert code == 2
    assert f"error: task.data: not found '{tmp_path / 'nowhere'}'" in err
    assert f"error: eval_tasks[0].eval: not found '{tmp_path / 'mc.jsonl'}'" in err
    assert f"error: regularizers[0].fisher: file not found '{tmp_path / 'f.safetensors'}'" in err
    bad = tmp_path / "bank"
    bad.mkdir()
    p2 = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="v2", task={"name": "beliefbank", "data": str(bad)})
    code, _, err = run_cli(capsys, "validate", str(p2))
    assert code == 2 and "BeliefBank file 'silver_facts.json' is missing" in err


# ---- run directories are data, not code (issue 14) -------------------------------------------------
EVIL = '''
from pathlib import Path
Path({marker!r}).write_text("pwned")
from transformers import BertConfig, BertModel, BertForSequenceClassification
class EvilConfig(BertConfig):
    model_type = "evil"
class EvilModel(BertModel):
    config_class = EvilConfig
class EvilForSequenceClassification(BertForSequenceClassification):
    config_class = EvilConfig
'''


def _evil_run(tmp_path, tiny_dirs, cls_data, trust_in_config: bool, allow_pickle: bool = False):
    """A finished-looking run whose model directory ships code that writes a marker file when imported."""
    import json
    import shutil

    marker = tmp_path / "MARKER"
    run = tmp_path / "runs" / "shared"
    shutil.copytree(tiny_dirs["bert"], run / "model")
    cfg_json = json.loads((run / "model" / "config.json").read_text())
    cfg_json.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                                                 "AutoModelForSequenceClassification": "evil.EvilForSequenceClassification"})
    (run / "model" / "config.json").write_text(json.dumps(cfg_json))
    (run / "model" / "evil.py").write_text(EVIL.format(marker=str(marker)))
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="shared",
                    model={"trust_remote_code": trust_in_config, "allow_pickle": allow_pickle})
    shutil.copy(p, run / "config.yaml")
    return run, marker


@pytest.mark.parametrize("argv", [["eval"], ["analyze", "neurons", "--compare"], ["analyze", "attention"],
                                  ["analyze", "landscape"]])
def test_a_run_asking_for_remote_code_is_refused_and_runs_nothing(capsys, tmp_path, tiny_dirs, cls_data, argv):
    run, marker = _evil_run(tmp_path, tiny_dirs, cls_data, trust_in_config=True)
    full = {"eval": ["eval", str(run)],
            "neurons": ["analyze", "neurons", str(tiny_dirs["bert"]), "--compare", str(run), "--out",
                        str(tmp_path / "n")],
            "attention": ["analyze", "attention", str(run), "--sentence", "not bad", "--out", str(tmp_path / "a")],
            "landscape": ["analyze", "landscape", str(run), "--out", str(tmp_path / "l")]}[argv[1] if len(argv) > 1
                                                                                          else "eval"]
    code, out, err = run_cli(capsys, *full)
    assert code == 2, err
    assert err.count("\n") == 1 and "model.trust_remote_code=true" in err and "--trust-remote-code" in err
    assert not marker.exists()
    assert not (tmp_path / "n").exists() and not (tmp_path / "a").exists() and not (tmp_path / "l").exists()


def test_remote_code_in_a_run_model_is_not_run_even_when_the_config_does_not_ask(capsys, tmp_path, tiny_dirs,
                                                                                  cls_data):
    run, marker = _evil_run(tmp_path, tiny_dirs, cls_data, trust_in_config=False)
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 2 and err.count("\n") == 1 and "model.name" in err
    assert not marker.exists()


def test_allow_pickle_in_a_run_config_is_ignored(capsys, tmp_path, tiny_dirs, cls_data):
    run, _ = _evil_run(tmp_path, tiny_dirs, cls_data, trust_in_config=False, allow_pickle=True)
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 2 and "model.allow_pickle=true" in err and "--allow-pickle" in err and err.count("\n") == 1
    # Without the switch in the config, the run's pickled-only weights are refused too.
    import shutil

    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("allow_pickle: true",
                                                                                "allow_pickle: false"))
    shutil.rmtree(run / "model")
    shutil.copytree(tiny_dirs["bert"], run / "model")
    (run / "model" / "model.safetensors").rename(run / "model" / "pytorch_model.bin")
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 2 and "only pickled weights" in err and err.count("\n") == 1


def test_api_load_run_takes_trust_only_from_its_arguments(tmp_path, tiny_dirs, cls_data):
    from guidetune.errors import GuidetuneError
    from guidetune.experiment import load_run

    run, marker = _evil_run(tmp_path, tiny_dirs, cls_data, trust_in_config=True)
    with pytest.raises(GuidetuneError, match="pass --trust-remote-code"):
        load_run(run)
    assert not marker.exists()


def test_a_run_asking_for_a_hub_attention_kernel_is_refused(capsys, tmp_path, tiny_dirs, cls_data):
    run, marker = _evil_run(tmp_path, tiny_dirs, cls_data, trust_in_config=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["attn_implementation"] = "kernels-community/evil"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 2 and err.count("\n") == 1
    assert "attention kernel 'kernels-community/evil'" in err and "--trust-remote-code" in err


def test_validate_quick_checks_schema_and_paths_without_transformers(tmp_path, tiny_dirs, cls_data):
    import subprocess
    import sys

    ok = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="q",
                     regularizers=[{"name": "l1", "layers": ["encoder.fina"]}])  # a layer name: not checked by --quick
    bad = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="qb",
                      task={"name": "classification", "train": str(tmp_path / "nope.jsonl"), "eval": str(cls_data["eval"])},
                      regularizers=[{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]},
                                    {"name": "fisher_dropout", "fisher": str(tmp_path / "f.safetensors")}])
    code = ("import sys\nfrom guidetune.cli import main\nrc = main(['validate', '--quick', sys.argv[1]])\n"
            "print('RC', rc, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ok)], capture_output=True, text=True, timeout=120)
    assert "RC 0 False" in out.stdout, out.stderr[-2000:]
    assert "OK (--quick: model, tokenizer, data and layer names not checked)" in out.stdout
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120)
    assert "RC 2 False" in out.stdout, out.stderr[-2000:]
    assert f"task.train: not found '{tmp_path / 'nope.jsonl'}'" in out.stderr
    assert f"regularizers[1].fisher: file not found '{tmp_path / 'f.safetensors'}'" in out.stderr


def test_output_into_a_closed_pipe_is_no_traceback(tiny_dirs):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "guidetune.cli", "ls", "layers", str(tiny_dirs["bert"])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader leaves before the first line is written (as `| head -0` would)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) in (0, 141) and "Traceback" not in err, err
