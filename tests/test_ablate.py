import json

import pytest
import torch
import torch.nn as nn

from guidetune.analysis.ablate import Ablator, CorpusEval, forward, reference_stats
from guidetune.analysis.ablate_units import parse_units
from guidetune.cli import main
from guidetune.errors import GuidetuneError
from guidetune.layers.capture import Capture
from guidetune.layers.names import resolve
from guidetune.testing import save_tiny, tiny_model

TEXTS = ["the cat sat on the mat", "physics and chemistry", "a red car in France", "the engine of the robot hums"]


def _enc(tok, texts=TEXTS):
    return {k: v for k, v in tok(texts, return_tensors="pt", padding=True).items() if k != "token_type_ids"}


def _in_cols(module: nn.Module, keep: torch.Tensor) -> None:
    """Zero every input column of a projection except ``keep`` (nn.Linear or GPT-2's Conv1D)."""
    with torch.no_grad():
        w = module.weight
        if isinstance(module, nn.Linear):
            mask = torch.zeros(w.shape[1], dtype=torch.bool)
            mask[keep] = True
            w[:, ~mask] = 0
        else:  # Conv1D: [in, out]
            mask = torch.zeros(w.shape[0], dtype=torch.bool)
            mask[keep] = True
            w[~mask, :] = 0


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_ablating_the_only_path_removes_its_contribution_exactly(kind, tok):
    model = tiny_model(kind, head="encoder" if kind == "bert" else "causal_lm").eval()
    stack = "encoder" if kind == "bert" else "decoder"
    ffn_out = resolve(model, f"{stack}.layers.1.ffn.out")[0].module  # input = the neurons
    _in_cols(ffn_out, torch.tensor([5]))  # neuron 5 is the only path through this FFN
    attn_out = resolve(model, f"{stack}.layers.0.attn.out")[0].module
    _in_cols(attn_out, torch.arange(16, 24))  # head 2 (of 4, dim 8) is the only path through attention
    sets = parse_units(model, f"{stack}.layers.1.ffn.act:5;{stack}.layers.0.attn:2")
    assert [(s.kind, s.units, s.width, s.head_dim) for s in sets] == [("neurons", [5], 64 if kind == "bert" else 128, None),
                                                                      ("heads", [2], 4, 8)]
    enc = _enc(tok)
    names = [f"{stack}.layers.1.ffn.out", f"{stack}.layers.0.attn.out"]
    cap = Capture(model, names, detach=True)
    with torch.no_grad(), cap as clean:
        forward(model, enc)
    with torch.no_grad(), Ablator(model, tok, sets, "zero").hooks(), cap as ablated:
        forward(model, enc)
    for name, module in zip(names, (ffn_out, attn_out)):
        bias = module.bias.expand_as(ablated[name])
        assert torch.equal(ablated[name], bias)  # exactly the bias: the unit's contribution is gone
        assert not torch.allclose(clean[name], bias)


def test_mean_and_resample_by_hand(tok):
    model = tiny_model("bert", head="encoder").eval()
    name = "encoder.layers.1.ffn.act"
    sets = parse_units(model, f"{name}:3,7")
    ref = TEXTS[:3]
    enc_ref = _enc(tok, ref)
    with torch.no_grad(), Capture(model, [name], detach=True) as c:
        forward(model, enc_ref)
    rows = c[name][enc_ref["attention_mask"].bool()]  # [tokens, 64]
    mean = rows.double().mean(0).float()
    stats = reference_stats(model, tok, sets, ref)
    assert torch.allclose(stats[id(sets[0])][0], mean, atol=1e-6)
    enc = _enc(tok, TEXTS[2:])
    with torch.no_grad(), Capture(model, [name], detach=True) as clean:
        forward(model, enc)
    for method in ("mean", "resample"):
        ab = Ablator(model, tok, sets, method, reference=ref)
        with torch.no_grad(), ab.hooks(), Capture(model, [name], detach=True) as got:
            forward(model, enc)
        x, x0 = got[name], clean[name]
        others = [i for i in range(64) if i not in (3, 7)]
        assert torch.equal(x[..., others], x0[..., others])
        if method == "mean":
            assert torch.equal(x[..., [3, 7]], mean[[3, 7]].expand(*x.shape[:-1], 2))
        else:
            pool = ab.stats[id(sets[0])][1]
            draw = torch.randint(0, len(pool), x.shape[:-1], generator=torch.Generator().manual_seed(0))
            assert torch.equal(x[..., [3, 7]], pool[:, [3, 7]][draw])
            assert sorted(map(tuple, pool.tolist())) == sorted(map(tuple, rows.tolist()))  # real activations


def test_control_draws_as_many_other_units_of_the_same_layer(tok):
    model = tiny_model("bert", head="encoder").eval()
    sets = parse_units(model, "encoder.layers.0.ffn.act:1,2,3")
    ab = Ablator(model, tok, sets, "zero", seed=4)
    picks = ab.control_units(5)
    assert len(picks) == 5 and all(len(p[0]) == 3 and not set(p[0]) & {1, 2, 3} for p in picks)
    res = ab.run(CorpusEval(model, tok, TEXTS, {"STEM": ["physics", "engine"]}), draws=5, progress=False)
    m = res["metrics"]["shift[STEM]"]
    assert res["evaluations"] == 7 and len(m["control_deltas"]) == 5
    assert m["before"] == pytest.approx(0, abs=1e-6) and m["delta"] > 0
    assert m["control_mean"] == pytest.approx(sum(m["control_deltas"]) / 5)
    block = Ablator(model, tok, parse_units(model, "encoder.layers.0"), "zero")
    assert block.control_units(3) is None  # a whole block: nothing left to draw a control from


@pytest.mark.parametrize("spec, message", [
    ("encoder.layers.1.ffn.act:64", "--units: neuron 64 is past encoder.layers.1.ffn.act's 64 neurons (0-63)"),
    ("encoder.layers.0.attn:4", "--units: head 4 is past encoder.layers.0.attn's 4 heads (0-3)"),
    ("encoder.layers.0.ffn.out:1", "names a ffn.out layer; ablation units are the neurons of a *.ffn.act layer"),
    ("encoder.layers.0.attn.probs:1", "names a attn.probs layer"),
    ("encoder.layers.0.ffn.act:a", "unit indices must be comma-separated integers"),
    ("encoder.layers.0.ffn.act", "name the neurons after ':'"),
])
def test_bad_unit_specs_are_one_line_errors(spec, message):
    model = tiny_model("bert", head="encoder")
    with pytest.raises(GuidetuneError) as e:
        parse_units(model, spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_units_from_a_neuron_analysis_and_from_a_runs_guided_heads(tmp_path):
    model = tiny_model("bert", head="encoder")
    d = tmp_path / "neurons"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"models": {"m": {"layer": "encoder.layers.1.ffn.act", "sentences": 10}}}))
    (d / "top_STEM.csv").write_text("neuron,n,recall,consistent,KT m\n9,4,0.5,no,1.0\n2,3,0.4,no,0.9\n")
    rows = ["neuron,token_rate,sentence_rate,mean_act,max_act,STEM_kt,STEM_recall,STEM_consistent"]
    rows += [f"{i},0.1,{0.5 if i != 7 else 0.1},0,1,{1 - i / 100:.2f},0.1,0" for i in range(64)]
    (d / "neurons_m.csv").write_text("\n".join(rows) + "\n")
    assert parse_units(model, f"@{d}:top2:STEM")[0].units == [9, 2]
    # more than the top table holds: ranked from the per-neuron table; neuron 7 fires on 1 sentence (< 3)
    assert parse_units(model, f"@{d}:top9:STEM")[0].units == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert parse_units(model, f"encoder.layers.0.ffn.act@{d}/top_STEM.csv:top1")[0].layer == "encoder.layers.0.ffn.act"
    with pytest.raises(GuidetuneError, match="Did you mean 'STEM'"):
        parse_units(model, f"@{d}:top2:STEMS")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("regularizers:\n- {name: attention_guidance, weight: 0.1, layers: ['encoder.layers.*'], "
                                     "heads: [0, 2]}\n- {name: l1, weight: 1}\n")
    sets = parse_units(model, f"@{run}:guided")
    assert [(s.layer, s.units) for s in sets] == [("encoder.layers.0.attn", [0, 2]), ("encoder.layers.1.attn", [0, 2])]


def test_cli_ablate_on_a_corpus_writes_the_table(tmp_path, capsys):
    model_dir = save_tiny("bert", tmp_path / "m", head="encoder")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "ab"
    assert main(["analyze", "ablate", str(model_dir), "--units", "encoder.layers.1.ffn.act:0,1", "--method", "mean",
                 "--draws", "2", "--corpus", str(corpus), "--reference", str(corpus), "--out", str(out),
                 "--device", "cpu"]) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert res["method"] == "mean" and res["draws"] == 2 and "shift[STEM]" in res["metrics"]
    assert "random-units control" in (out / "ablation.md").read_text()
    assert main(["analyze", "ablate", str(model_dir), "--units", "encoder.layers.9.ffn.act:0", "--device", "cpu",
                 "--out", str(out)]) == 2
    assert "unknown layer name 'encoder.layers.9.ffn.act'" in capsys.readouterr().err


def test_neurons_ablate_top_reports_each_concept_against_random_neurons(tmp_path, capsys):
    model_dir = save_tiny("bert", tmp_path / "m", head="encoder")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS * 2) + "\n")
    out = tmp_path / "ne"
    assert main(["analyze", "neurons", str(model_dir), "--corpus", str(corpus), "--layer", "encoder.layers.1.ffn.act",
                 "--ablate-top", "3", "--draws", "2", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "ablation" / "ablation_STEM.json").read_text())
    top = json.loads((out / "summary.json").read_text())["top_neurons"]["STEM"]
    assert res["neurons"][:len(top)] == top[:3] and len(res["neurons"]) == 3
    assert res["draws"] == 2 and {"shift[STEM]", "shift[not STEM]"} <= set(res["metrics"])
    md = (out / "ablation" / "ablation.md").read_text()
    assert (out / "ablation" / "manifest.json").exists()
    assert "| STEM | 3 | selectivity (concept − others) |" in md
    assert "| STEM | 3 | shift[STEM] |" in md and "| colors | 3 | shift[not colors] |" in md


def test_cli_ablate_on_a_task_from_a_config(tmp_path, tiny_dirs, cls_data):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data)
    out = tmp_path / "ab"
    assert main(["analyze", "ablate", str(tiny_dirs["bert"]), "--task", str(cfg), "--units",
                 "encoder.layers.0.attn:0,1", "--draws", "2", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert {"accuracy", "f1_macro", "f1"} <= set(res["metrics"]) and res["evaluations"] == 4
    assert len(res["metrics"]["accuracy"]["control_deltas"]) == 2
    assert main(["analyze", "ablate", str(tiny_dirs["bert"]), "--task", str(cfg), "--units",
                 "encoder.layers.0.attn:0,1,2,3", "--draws", "2", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert res["control"] == "none: a whole layer is ablated" and res["evaluations"] == 2


@pytest.mark.slow
def test_cli_ablate_a_runs_guided_heads_on_its_own_task(tmp_path, tiny_dirs, cls_data):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="guided", regularizers=[
        {"name": "attention_guidance", "weight": 0.1, "layers": ["encoder.layers.*"], "heads": [1]}])
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "guided"
    out = tmp_path / "ab"
    assert main(["analyze", "ablate", str(run), "--units", f"@{run}:guided", "--method", "resample", "--draws", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert res["units"] == ["encoder.layers.0.attn: heads 1", "encoder.layers.1.attn: heads 1"]
    before = json.loads((run / "results.json").read_text())["metrics"]["accuracy"]
    assert res["metrics"]["accuracy"]["before"] == pytest.approx(before)  # the run's own task and weights
