"""``guidetune fisher`` end to end: clm labels, tasks built as training builds them (GLUE STS-B pairs with
token type ids, regression), output sets with a manifest, and every bad input a one-line error."""
import copy
import json

import pytest
import torch

from guidetune.analysis.fisher_estimate import estimate, load
from guidetune.analysis.fisher_io import manifest_path
from guidetune.cli import main
from guidetune.config import ModelSpec
from guidetune.errors import GuidetuneError
from guidetune.models import load_model
from guidetune.tasks.base import pad_batch
from guidetune.tasks.classification import Classification
from guidetune.testing import save_tiny

TEXTS = ["the cat sat on the mat", "a dog", "never say never again please", "birds fly south",
         "one two three four five six seven", "it rains"]


def _fisher(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_clm_labels_come_from_the_input_ids(tmp_path, tiny_dirs, tok):
    data = tmp_path / "t.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "f.safetensors"
    assert main(["fisher", str(tiny_dirs["llama"]), "--data", str(data), "--objective", "clm", "--out", str(out),
                 "--batch-size", "4", "--device", "cpu"]) == 0
    got = _fisher(out)
    model, mtok = load_model(ModelSpec(name=str(tiny_dirs["llama"]), head="causal_lm"))
    # float64 one-sample loop with the labels written out by hand: ids, padding excluded (none at batch 1)
    ref = copy.deepcopy(model).double().eval()
    params = dict(ref.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in TEXTS:
        ids = torch.tensor([mtok(t)["input_ids"]])
        logits = ref(input_ids=ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        for n, g in zip(params, torch.autograd.grad(nll, list(params.values()))):
            total[n] += g ** 2
    top = max(float(v.max()) for v in total.values()) / len(TEXTS)
    for n, t in total.items():
        r = t / len(TEXTS)
        assert float(((got[n].double() - r).abs() / r.clamp_min(1e-4 * top)).max()) < 1e-4, n
    man = json.loads(manifest_path(out).read_text())
    assert man["inputs"]["objective"] == "clm" and man["inputs"]["n"] == 6
    assert set(man["files"]) == {"f.safetensors", "f.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_samples_cut_to_max_length_are_counted_and_reported(tmp_path, tiny_dirs, caplog):
    data = tmp_path / "t.jsonl"  # one text far past --max-length 8, two far below it
    data.write_text(json.dumps({"text": "the cat " * 40}) + "\n" + json.dumps({"text": "a dog"}) + "\n"
                    + json.dumps({"text": "it rains"}) + "\n")
    out = tmp_path / "f.safetensors"
    with caplog.at_level("WARNING"):
        assert main(["fisher", str(tiny_dirs["llama"]), "--data", str(data), "--objective", "clm", "--out", str(out),
                     "--max-length", "8", "--device", "cpu"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())["meta"]
    assert (meta["truncated_samples"], meta["max_length"]) == (1, 8)
    assert "1 of 3 samples are longer than --max-length 8 tokens and were cut" in caplog.text


def _stsb_dir(tmp_path):
    d = tmp_path / "STS-B"
    d.mkdir()
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = [(TEXTS[i], TEXTS[(i + 2) % 6], f"{i * 0.8:.1f}") for i in range(6)]
    body = "".join(f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{s}\n" for i, (a, b, s) in enumerate(rows))
    (d / "train.tsv").write_text(head + body)
    (d / "dev.tsv").write_text(head + body)
    return d


def test_task_yaml_glue_stsb_pairs_and_regression_as_in_training(tmp_path, tok):
    import yaml

    model_dir = save_tiny("bert", tmp_path / "bert1", head="classification", num_labels=1, problem_type="regression")
    task_yaml = tmp_path / "stsb.yaml"
    task_yaml.write_text(yaml.safe_dump({"task": {"name": "classification", "glue_task": "stsb",
                                                  "glue_dir": str(_stsb_dir(tmp_path)), "max_length": 32}}))
    out = tmp_path / "stsb.safetensors"
    assert main(["fisher", str(model_dir), "--task", str(task_yaml), "--out", str(out), "--batch-size", "4"]) == 0
    got = _fisher(out)
    # The reference: the model's own training loss (MSE on the score) on the task's own features, per sample
    model, mtok = load_model(ModelSpec(name=str(model_dir), head="classification"), num_labels=1,
                             problem_type="regression")
    task = Classification(glue_task="stsb", glue_dir=str(tmp_path / "STS-B"), max_length=32)
    task.setup(mtok)
    feats = [{k: v for k, v in f.items() if not k.startswith("gt_")} for f in task.dataset("train")]
    assert all(1 in f["token_type_ids"] for f in feats) and isinstance(feats[3]["labels"], float)
    ref = copy.deepcopy(model).double().eval()
    params = dict(ref.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for f in feats:
        loss = ref(**pad_batch(mtok, [f])).loss  # HF: MSELoss of the one sample
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)):
            if g is not None:
                total[n] += g ** 2
    top = max(float(v.max()) for v in total.values()) / 6
    for n, t in total.items():
        r = t / 6
        assert float(((got[n].double() - r).abs() / r.clamp_min(1e-4 * top)).max()) < 1e-4, n
    assert float(got["bert.embeddings.token_type_embeddings.weight"][1].abs().sum()) > 0  # pair segment used
    assert json.loads(manifest_path(out).read_text())["inputs"]["data"] == str(task_yaml)


@pytest.fixture(scope="module")
def cls_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("fd")
    p = d / "d.jsonl"
    p.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    return p


def _one_line_error(capsys, argv, fragment):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert fragment in err, err


@pytest.mark.parametrize("extra,fragment", [
    (["--fraction", "0"], "--fraction: must be in (0, 1], got 0.0"),
    (["--fraction", "2"], "--fraction: must be in (0, 1], got 2.0"),
    (["--reliability", "x,y"], "--reliability"),
])
def test_bad_options_are_one_line(tmp_path, tiny_dirs, cls_file, capsys, extra, fragment):
    _one_line_error(capsys, ["fisher", str(tiny_dirs["bert"]), "--data", str(cls_file), "--objective", "task",
                             "--out", str(tmp_path / "f.safetensors"), *extra], fragment)
    assert list(tmp_path.iterdir()) == []


def test_out_directory_is_one_line_and_leaves_nothing(tmp_path, tiny_dirs, cls_file, capsys):
    _one_line_error(capsys, ["fisher", str(tiny_dirs["bert"]), "--data", str(cls_file), "--objective", "task",
                             "--out", str(tmp_path)], f"--out: '{tmp_path}' is a directory")
    assert list(tmp_path.iterdir()) == []


def test_mlm_on_a_checkpoint_without_mlm_head_is_refused(tmp_path, tiny_dirs, capsys):
    data = tmp_path / "t.txt"
    data.write_text("\n".join(TEXTS))
    _one_line_error(capsys, ["fisher", str(tiny_dirs["bert"]), "--data", str(data), "--objective", "mlm",
                             "--out", str(tmp_path / "f.safetensors")],
                    "--objective mlm: '" + str(tiny_dirs["bert"]) + "' has no pretrained mlm head")


def test_readers_refuse_corrupt_incomplete_and_foreign_sets(tmp_path, tiny_dirs, cls_file, capsys, make_model):
    out = tmp_path / "f.safetensors"
    assert main(["fisher", str(tiny_dirs["bert"]), "--data", str(cls_file), "--objective", "task",
                 "--out", str(out), "--plot"]) == 0
    assert set(json.loads(manifest_path(out).read_text())["files"]) == {"f.safetensors", "f.json", "f.png"}
    bert = make_model("bert", "classification")
    load(out, bert)
    with pytest.raises(GuidetuneError, match="was estimated on a 'bert' model; this model is 'gpt2'"):
        load(out, make_model("gpt2"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(GuidetuneError, match="is corrupt or not a safetensors file"):
        load(bad)
    manifest_path(out).unlink()  # as if killed between the data files and the manifest
    with pytest.raises(GuidetuneError, match="has no manifest"):
        load(out, bert)
    # and through a reader: the fisher_dropout regularizer refuses it at setup
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.regularizers import REGULARIZERS

    with pytest.raises(GuidetuneError, match="has no manifest"):
        build_plugin(REGULARIZERS, PluginSpec("fisher_dropout", {"fisher": str(out)})).setup(bert, None)


def test_a_wrong_rule_is_refused_by_name_before_estimating(tok, make_model, monkeypatch):
    from guidetune.analysis import fisher_rules

    model = make_model("bert", "classification")
    samples = [dict(tok(t), labels=i % 2) for i, t in enumerate(TEXTS)]
    calls = []
    monkeypatch.setattr("guidetune.analysis.fisher_estimate._run", lambda *a, **k: calls.append(1))
    wrong = lambda m, a, g, b, want, dtype: [(p, ("dense", torch.zeros(b, *p.shape, dtype=dtype)))  # noqa: E731
                                             for p in (m.weight, m.bias) if want(p)]
    monkeypatch.setattr(fisher_rules, "layernorm", wrong)
    with pytest.raises(GuidetuneError, match=r"^fisher: no per-sample rule for 10 parameters of this bert model: "
                                             r"bert.embeddings.LayerNorm.weight, bert.embeddings.LayerNorm.bias, "):
        estimate(model, tok, samples, "task", batch_size=3, progress=False)
    assert calls == []  # refused before the estimate ran


def test_supported_names_parameters_without_a_rule(make_model, monkeypatch):
    from guidetune.analysis import fisher_rules
    from guidetune.analysis.fisher_estimate import supported

    model = make_model("llama")
    assert supported(model) == (True, [])
    monkeypatch.setattr(fisher_rules, "generic", lambda m, *a, **k: [])  # as if RMSNorm had no rule: direct
    assert supported(model) == (True, [])  # still exact: estimated by autograd one sample at a time


def test_device_map_auto_loading_gives_the_same_estimate(tmp_path, tiny_dirs, cls_file):
    pytest.importorskip("accelerate")
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    args = ["fisher", str(tiny_dirs["bert"]), "--data", str(cls_file), "--objective", "task", "--device", "cpu"]
    assert main([*args, "--out", str(a)]) == 0
    assert main([*args, "--device-map", "auto", "--out", str(b)]) == 0
    fa, fb = _fisher(a), _fisher(b)
    assert all(torch.equal(fa[n], fb[n]) for n in fa)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fisher_on_cuda_equals_cpu_with_float64_totals(tok, make_model):
    model = make_model("llama").eval()
    samples = [dict(tok(t)) for t in TEXTS]
    for s in samples:
        s.pop("token_type_ids")
    cpu = estimate(model, tok, samples, "clm", batch_size=3, progress=False)[6]
    gpu = estimate(model.cuda(), tok, samples, "clm", batch_size=3, progress=False)[6]
    top = max(float(v.max()) for v in cpu.values())
    for n in cpu:
        assert float(((gpu[n].double() - cpu[n].double()).abs() / cpu[n].double().clamp_min(1e-4 * top)).max()) < 1e-3, n
