"""--device / --dtype: one resolver (guidetune.devices), honoured by eval and every analysis."""
import numpy as np
import pytest
import torch

from guidetune.analysis.neuron_analysis import NeuronAnalysis
from guidetune.cli import main
from guidetune.devices import place, resolve_device, resolve_dtype, to_device
from guidetune.errors import GuidetuneError
from guidetune.testing import tiny_model

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")


def test_resolve_device_and_dtype_on_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU ") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype(None) is torch.float32 and resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(GuidetuneError, match=r"--device: 'gpu' is not a device; allowed: auto, cpu, cuda"):
        resolve_device("gpu")
    with pytest.raises(GuidetuneError, match=r"--dtype: 'bfloat61' is not allowed. Did you mean 'bfloat16'\?"):
        resolve_dtype("bfloat61")


@no_cuda
def test_cuda_without_a_gpu_is_one_line_naming_the_option_and_the_fix():
    with pytest.raises(GuidetuneError) as e:
        resolve_device("cuda:1")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--device: 'cuda:1' asked for but torch sees no CUDA GPU")
    assert msg.endswith("use --device cpu or auto")


def test_place_moves_and_casts_and_to_device_keeps_non_tensors():
    model, dev = place(tiny_model("bert"), "cpu", "bfloat16")
    assert dev == torch.device("cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = to_device({"input_ids": torch.ones(2, 3, dtype=torch.long), "text": ["a", "b"]}, dev)
    assert batch["text"] == ["a", "b"] and batch["input_ids"].device == dev


@no_cuda
@pytest.mark.parametrize("argv", [
    ["analyze", "neurons", "MODEL", "--device", "cuda"],
    ["analyze", "attention", "MODEL", "--sentence", "not good", "--device", "cuda"],
    ["analyze", "landscape", "MODEL", "--config", "CFG", "--device", "cuda:0"],
    ["eval", "RUN", "--device", "cuda"],
])
def test_every_model_command_refuses_cuda_without_a_gpu(argv, tiny_dirs, tmp_path, capsys):
    argv = [str(tiny_dirs["bert"]) if a == "MODEL" else str(tmp_path / "run") if a == "RUN"
            else str(tmp_path / "cfg.yaml") if a == "CFG" else a for a in argv]
    (tmp_path / "cfg.yaml").write_text("task: {name: classification}\n")
    assert main(argv + ["--out", str(tmp_path / "o")] if argv[0] == "analyze" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device: 'cuda") and "use --device cpu" in err[0]
    assert not (tmp_path / "o").exists()  # nothing half-written


def _corpus(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["the red car is fast", "algebra is fun", "nice day", "a red apple and algebra",
                                 "nothing here", "red is a colour"] * 3) + "\n")
    conc = tmp_path / "k.yaml"
    conc.write_text("c: [red]\nm: [algebra]\n")
    return str(corpus), str(conc)


def test_bfloat16_neuron_scan_on_cpu_matches_float32_within_tolerance(tmp_path, tiny_dirs):
    corpus, conc = _corpus(tmp_path)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, layer="encoder.layers.1.ffn.act",
                       min_support=1, batch_size=4, device="cpu", dtype=dtype, out=str(tmp_path / dtype)).run()
        runs[dtype] = np.load(tmp_path / dtype / "stats_bert.npz")
    f, b = runs["float32"], runs["bfloat16"]
    assert int(f["sentences"]) == int(b["sentences"]) == 18 and int(f["tokens"]) == int(b["tokens"])
    # bf16 keeps 8 mantissa bits: activations within ~1%; only neurons sitting at the threshold can flip
    np.testing.assert_allclose(b["act_sum"], f["act_sum"], rtol=0.05, atol=0.05 * int(f["tokens"]) * 0.02)
    flips = np.abs(b["token_fires"] - f["token_fires"]).sum() / max(f["token_fires"].sum(), 1)
    assert flips < 0.02


def test_explicit_cpu_equals_auto_on_this_machine(tmp_path, tiny_dirs):
    if torch.cuda.is_available():
        pytest.skip("auto is a GPU here")
    corpus, conc = _corpus(tmp_path)
    a = NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, layer="encoder.layers.0.ffn.act",
                       device="cpu", out=str(tmp_path / "a")).run()
    b = NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, layer="encoder.layers.0.ffn.act",
                       device="auto", out=str(tmp_path / "b")).run()
    assert a == b


def test_device_map_auto_loads_for_a_neuron_scan_on_cpu(tmp_path, tiny_dirs):
    """accelerate's device_map="auto" (here: everything fits the CPU) gives the plain load's counts."""
    corpus, conc = _corpus(tmp_path)
    kw = dict(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, layer="encoder.layers.1.ffn.act",
              device="cpu")
    NeuronAnalysis(**kw, out=str(tmp_path / "plain")).run()
    NeuronAnalysis(**kw, device_map="auto", out=str(tmp_path / "map")).run()
    p, m = np.load(tmp_path / "plain" / "stats_bert.npz"), np.load(tmp_path / "map" / "stats_bert.npz")
    for k in ("token_fires", "sentence_fires", "concept_fires", "general_fires"):
        assert np.array_equal(p[k], m[k]), k
    np.testing.assert_allclose(m["act_sum"], p["act_sum"], rtol=1e-6)


# ---- on a GPU (pytest -m gpu) -------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_neuron_scan_equals_cpu_and_bf16_is_close(tmp_path, tiny_dirs):
    corpus, conc = _corpus(tmp_path)
    stats = {}
    for device, dtype in (("cpu", None), ("cuda", None), ("cuda", "bfloat16")):
        key = f"{device}-{dtype}"
        NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, layer="encoder.layers.1.ffn.act",
                       device=device, dtype=dtype, out=str(tmp_path / key)).run()
        stats[key] = np.load(tmp_path / key / "stats_bert.npz")
    c, g, h = stats["cpu-None"], stats["cuda-None"], stats["cuda-bfloat16"]
    np.testing.assert_allclose(g["act_sum"], c["act_sum"], rtol=1e-4, atol=1e-3)
    assert np.abs(g["token_fires"] - c["token_fires"]).sum() <= 2  # TF32/float32 kernels may flip a tie
    assert np.abs(h["token_fires"] - c["token_fires"]).sum() / c["token_fires"].sum() < 0.02


@pytest.mark.gpu
def test_gpu_model_is_placed_and_batches_follow(tiny_dirs):
    from guidetune.analysis.common import load_any, model_device

    _, model, tok = load_any(str(tiny_dirs["bert"]), device="cuda", dtype="bfloat16")
    assert model_device(model).type == "cuda" and next(model.parameters()).dtype is torch.bfloat16
    enc = to_device(dict(tok(["hello"], return_tensors="pt")), model_device(model))
    with torch.no_grad():
        assert model(**enc).last_hidden_state.device.type == "cuda"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dirs, cls_data):
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp("devrun")
    assert main(["train", str(tiny_config(tmp, tiny_dirs["bert"], cls_data, name="dev"))]) == 0
    return tmp / "runs" / "dev"


def _eval(run, *flags) -> dict:
    import json

    assert main(["eval", str(run), *flags]) == 0
    return json.loads((run / "results.json").read_text())["eval"]


def test_eval_honours_device_and_dtype_on_cpu(finished_run):
    plain = _eval(finished_run, "--device", "cpu")
    assert plain["accuracy"] == json_metrics(finished_run)["accuracy"]  # same model, same place: same metric
    half = _eval(finished_run, "--device", "cpu", "--dtype", "bfloat16")
    assert abs(half["accuracy"] - plain["accuracy"]) <= 1 / 12 + 1e-9  # at most one of the 12 eval rows flips


def json_metrics(run) -> dict:
    import json

    return json.loads((run / "results.json").read_text())["metrics"]


@pytest.mark.gpu
def test_gpu_eval_equals_cpu_eval(finished_run):
    cpu = _eval(finished_run, "--device", "cpu")
    gpu = _eval(finished_run, "--device", "cuda")
    assert gpu["accuracy"] == cpu["accuracy"]


@no_cuda
def test_python_api_takes_the_same_device_keywords(tmp_path, tiny_dirs):
    import guidetune

    with pytest.raises(GuidetuneError, match=r"^--device: 'cuda' asked for but torch sees no CUDA GPU"):
        guidetune.evaluate(tmp_path / "no-run", device="cuda")
    corpus, conc = _corpus(tmp_path)
    with pytest.raises(GuidetuneError, match=r"^--device: 'cuda:0' asked for"):
        guidetune.analyze.neurons(str(tiny_dirs["bert"]), corpus=corpus, concepts=conc, device="cuda:0",
                                  out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
