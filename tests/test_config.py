import pytest
import yaml

from guidetune.config import apply_overrides, load_config, parse_config
from guidetune.errors import ConfigError, GuidetuneError

BASE = {"name": "x", "task": {"name": "classification"}, "train": {"lr": 1e-4}}


def test_overrides_reach_nested_fields_and_list_items():
    data = {**BASE, "regularizers": [{"name": "l1", "weight": 1.0}]}
    out = apply_overrides(data, ["train.lr=3e-4", "regularizers.0.weight=0.5", "model.name=./m", "seed=3",
                                 "regularizers.0.layers=[encoder.final, encoder.middle]"])
    cfg = parse_config(out)
    assert cfg.train.lr == 3e-4 and cfg.seed == 3 and cfg.model.name == "./m"
    assert cfg.regularizers[0].weight == 0.5
    assert cfg.regularizers[0].params["layers"] == ["encoder.final", "encoder.middle"]
    assert data["train"]["lr"] == 1e-4  # the input is not modified


def test_unknown_override_and_field_get_suggestions():
    with pytest.raises(ConfigError, match=r"unknown field 'trian'\. Did you mean 'train'\?"):
        apply_overrides(BASE, ["trian.lr=1"])
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "train": {"learning_rate": 1e-4}})
    assert e.value.messages == ["train.learning_rate: unknown field. Did you mean 'lr'? Available: "
                                + e.value.messages[0].split("Available: ")[1]]


def test_every_error_is_reported_at_once():
    bad = {
        "name": "x",
        "task": {"name": "clasification"},
        "train": {"lr": -1, "batch_size": "big"},
        "finetune": {"mode": "lora2"},
        "regularizers": [{"name": "l1", "weight": -1.0}, {"name": "l3"}, {"name": "l1", "tokens": "every"}],
        "extra_key": 1,
    }
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    text = "\n".join(e.value.messages)
    for expected in [
        "extra_key: unknown field",
        "task.name: unknown task 'clasification'. Did you mean 'classification'?",
        "train.batch_size: expected an integer, got 'big'",
        "finetune.mode: got 'lora2', allowed: full, head, last_layer, lora, qlora, adapter. Did you mean 'lora'?",
        "regularizers[0].weight: must be >= 0, got -1.0",
        "regularizers[1].name: unknown regularizer 'l3'. Did you mean 'l1'?",
        "regularizers[2].tokens: got 'every'",
    ]:
        assert expected in text, (expected, text)
    assert all("\n" not in m for m in e.value.messages)


def test_post_init_checks_name_the_field():
    with pytest.raises(ConfigError, match=r"train\.lr: must be > 0, got -1\.0"):
        parse_config({**BASE, "train": {"lr": -1}})


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntask:\n  name: classification\n  train: [a, b\nseed: 1\n")
    with pytest.raises(GuidetuneError) as e:
        load_config(p)
    assert str(e.value).startswith(f"YAML syntax error at {p}:5:")
    assert "\n" not in str(e.value)


def test_missing_config_file():
    with pytest.raises(GuidetuneError, match="config file not found: 'nope.yaml'"):
        load_config("nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_config({**BASE, "regularizers": [{"name": "l1", "weight": 0.1, "layers": ["encoder.final"]}]})
    again = parse_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_scientific_notation_without_dot_is_a_number():
    cfg = parse_config(yaml.safe_load("name: x\ntask: classification\ntrain: {lr: 1e-5}\n"
                                      "regularizers: [{name: l1, weight: 1e-5}]"))
    assert cfg.train.lr == 1e-5 and cfg.regularizers[0].weight == 1e-5
