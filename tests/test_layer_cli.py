"""``guidetune ls models``, ``guidetune ls layers MODEL --verify`` and validate's layer-name / head checks."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import tiny_config
from guidetune.cli import main
from guidetune.testing import MODEL_TYPES, save_tiny


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ls_models_lists_every_type_with_what_it_supports(capsys):
    code, out, _ = run_cli(capsys, "ls", "models")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["model", "type", "family", "layer", "names", "attn.probs", "Fisher", "LoRA", "targets"]
    rows = {ln.split()[0]: ln for ln in lines[1:-1]}
    assert list(rows) == list(MODEL_TYPES) and len(rows) >= 25
    assert rows["qwen3"].split()[1:4] == ["llama", "decoder", "interface"]
    assert rows["bert"].split()[1:4] == ["bert", "encoder", "recompute"] and rows["bert"].endswith("query,value")
    assert "encoder+decoder" in rows["bart"] and "interface" in rows["bart"]
    assert "sites per expert + router" in rows["mixtral"] and "shared layers" in rows["albert"]
    assert "own eager tensor" in rows["deberta-v2"]
    assert lines[-1].startswith(f"{len(MODEL_TYPES)} model types.")


def test_ls_models_fisher_column_asks_the_fisher_check(capsys, monkeypatch):
    import guidetune.analysis.fisher_estimate as fe

    monkeypatch.setattr(fe, "supported", lambda model, objective=None: (model.config.model_type != "opt", ["x"]))
    from guidetune.listing import model_rows

    rows = {r[0]: r for r in model_rows(fisher=True)}
    assert rows["gpt2"][4] == "yes" and rows["opt"][4] == "no (1 parameters)"


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return save_tiny("qwen3", tmp_path_factory.mktemp("q3") / "m")


def test_ls_layers_verify_reports_all_equal(capsys, qwen3_dir):
    code, out, _ = run_cli(capsys, "ls", "layers", str(qwen3_dir), "--verify")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["canonical", "name"]
    assert all(ln.endswith(" OK") for ln in lines[1:-1]) and len(lines) - 2 == 12
    assert any("decoder.layers.0.attn.probs" in ln and "eager attentions" in ln for ln in lines)
    assert lines[-1] == "12/12 checks equal within 0.0001"
    assert "hidden_states[2] after the final norm" in out  # the last block: LLaMA-style final norm


def test_ls_layers_verify_exits_1_on_a_wrong_table(capsys, qwen3_dir, monkeypatch):
    import guidetune.layers.families as families

    fam = next(f for f in families.FAMILIES if "qwen3" in f.model_types)
    wrong = dataclasses.replace(fam, sites={"decoder": {**fam.sites["decoder"],
                                                       "out": families.Site("mlp", "output")}})
    monkeypatch.setattr(families, "FAMILIES", tuple(wrong if f is fam else f for f in families.FAMILIES))
    code, out, _ = run_cli(capsys, "ls", "layers", str(qwen3_dir), "--verify")
    assert code == 1
    fails = [ln.split()[0] for ln in out.strip().splitlines()[1:-1] if ln.endswith(" FAIL")]
    assert fails == ["decoder.layers.0.out", "decoder.layers.1.out"]
    assert out.strip().splitlines()[-1] == "10/12 checks equal within 0.0001; 2 FAIL"


def test_validate_reports_head_name_and_type_errors_together(capsys, tmp_path, tiny_dirs, cls_data):
    p = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, regularizers=[
        {"name": "attention_guidance", "weight": 1.0, "layers": ["encoder.layers.1"], "heads": [0, 4]},
        {"name": "l1", "weight": 1.0, "layers": ["encoder.fnal"]},
        {"name": "hoyer", "weight": "abc", "layers": ["encoder.final"]}])
    code, _, err = run_cli(capsys, "validate", str(p))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0] == "error: regularizers[2].weight: expected a number, got 'abc'"
    assert lines[1] == "error: regularizers[0].heads: head 4 is out of range for the encoder: 4 heads, 0-3"
    assert lines[2].startswith("error: regularizers[1].layers: unknown layer name 'encoder.fnal'")
    assert "Did you mean 'encoder.final'?" in lines[2]


def test_validate_checks_every_layer_name_field_not_only_layers(tmp_path, tiny_dirs, monkeypatch):
    from guidetune.layers.names import LayerScheme
    from guidetune.regularizers import REGULARIZERS
    from guidetune.testing import tiny_config as hf_config
    from guidetune.validate import head_fields, layer_fields, plugin_name_errors

    @dataclasses.dataclass
    class Probe:
        source_layer: str = "encoder.first"
        targets: list[str] = dataclasses.field(default_factory=list, metadata={"layers": True})
        probe_heads: list[int] = dataclasses.field(default_factory=lambda: [0])

    monkeypatch.setitem(REGULARIZERS._items, "probe", Probe)
    assert layer_fields(Probe) == ["source_layer", "targets"] and head_fields(Probe) == ["probe_heads"]
    cfg = hf_config("gpt2")
    errors = plugin_name_errors([("regularizers[0]", "regularizer", "probe",
                                  {"source_layer": "decoder.layers.2", "targets": ["decoder.final", "encoder.x"],
                                   "probe_heads": [3, -1]})], LayerScheme.from_config(cfg), cfg)
    assert [e.split(":")[0] for e in errors] == ["regularizers[0].source_layer", "regularizers[0].targets",
                                                 "regularizers[0].probe_heads"]
    assert errors[2] == "regularizers[0].probe_heads: head -1 is out of range for the decoder: 4 heads, 0-3"
