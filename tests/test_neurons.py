import json

import numpy as np
import pytest
import torch

from guidetune.analysis.neuron_analysis import NeuronAnalysis
from guidetune.analysis.neurons import Counters, Keywords, concept_scores, summarize, top_neurons
from guidetune.errors import GuidetuneError


def test_counters_by_hand():
    # 3 sentences x 3 positions x 4 neurons; sentence 2 has one padding position.
    acts = torch.tensor([
        [[1.0, -1, 0, 2], [0.5, -1, 0, -2], [-1, -1, 0, 0]],
        [[-1, 2.0, 0, -1], [-1, -1, 0, -1], [3, -1, 0, -1]],
        [[-1, -1, 0, 1], [-1, -1, 0, 1], [9, 9, 9, 9]],
    ])
    counted = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    member = torch.tensor([[True, False], [True, True], [False, False]])  # concepts A, B
    c = Counters(["A", "B"], 4)
    c.add(acts, counted, 0.0, member, 0.0)
    assert c.token_fires.tolist() == [3, 1, 0, 3]  # padding (the 9s) never counts
    assert c.sentence_fires.tolist() == [2, 1, 0, 2]
    assert c.act_max.tolist() == [3, 2, 0, 2]
    assert c.concept_fires.tolist() == [[2, 1, 0, 1], [1, 1, 0, 0]]
    assert c.general_sentences == 1 and c.general_fires.tolist() == [0, 0, 0, 1]
    s = summarize(c)
    assert s["dead_fraction"] == 0.25 and s["general_neurons"] == 1
    sc = concept_scores(c, consistent_in=1.0, consistent_out=0.0)
    # neuron 0 fires on sentences 1 and 2, both concept A: KT 1; neuron 3 fires on 1 and 3: KT 1/2
    assert sc["A"]["kt"].tolist() == [1.0, 1.0, 0.0, 0.5]
    assert sc["A"]["recall"].tolist() == [1.0, 0.5, 0.0, 0.5]
    assert sc["A"]["consistent"].tolist() == [True, False, False, False]
    assert top_neurons(sc, "A", k=2, min_support=1) == [0, 1]
    # a fraction rule: fires on a sentence only when on >= 2/3 of its tokens
    c2 = Counters(["A", "B"], 4)
    c2.add(acts, counted, 0.0, member, 2 / 3)
    assert c2.sentence_fires.tolist() == [1, 0, 0, 1]


def test_keywords_match_whole_words_any_case():
    kw = Keywords({"colors": ["red", "dark blue"], "maths": ["algebra"]})
    got = kw.member(["A Red car", "the credit", "dark blue sea and algebra", "bluebird"]).tolist()
    assert got == [[True, False], [False, False], [True, True], [False, False]]
    with pytest.raises(GuidetuneError, match="the concept list is empty"):
        Keywords({})
    with pytest.raises(GuidetuneError, match="concept 'x' has no keywords"):
        Keywords({"x": []})


def _files(tmp_path, lines=("the red car is fast", "algebra is fun", "nice day"), concepts="c: [red]\nm: [algebra]\n"):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n")
    conc = tmp_path / "k.yaml"
    conc.write_text(concepts)
    return str(corpus), str(conc)


def test_analysis_outputs_and_comparison(tmp_path, tiny_dirs):
    corpus, conc = _files(tmp_path)
    res = NeuronAnalysis(models=[str(tiny_dirs["bert"]), str(tiny_dirs["bert"])], corpus=corpus, concepts=conc,
                         layer="encoder.layers.1.ffn.act", min_support=1, out=str(tmp_path / "o")).run()
    assert list(res["models"]) == ["bert", "bert-2"]
    assert res["models"]["bert"]["sentences"] == 3 and res["models"]["bert"]["neurons"] == 64
    assert res["kt_of_top"]["c"]["bert"] == res["kt_of_top"]["c"]["bert-2"]
    head = (tmp_path / "o" / "top_c.md").read_text().splitlines()[0]
    assert head == "| neuron | n | recall | consistent | KT bert | KT bert-2 |"
    assert len((tmp_path / "o" / "neurons_bert.csv").read_text().splitlines()) == 65
    assert (tmp_path / "o" / "comparison.png").exists() and (tmp_path / "o" / "firing_rates.png").exists()
    stats = np.load(tmp_path / "o" / "stats_bert.npz")
    assert int(stats["sentences"]) == 3
    json.loads((tmp_path / "o" / "summary.json").read_text())


def test_quantile_threshold_is_per_neuron(tmp_path, tiny_dirs):
    corpus, conc = _files(tmp_path)
    res = NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, quantile=0.9,
                         layer="encoder.layers.0.ffn.act", out=str(tmp_path / "q")).run()
    thr = np.load(tmp_path / "q" / "stats_bert.npz")["thresholds"]
    assert thr.shape == (64,) and len(set(np.round(thr, 6))) > 1
    assert res["models"]["bert"]["threshold"] == "quantile 0.900"


@pytest.mark.parametrize("kwargs,message", [
    ({"layer": "encoder.layers.1.out"}, r"'encoder.layers.1.out' is not an FFN activation layer; neurons live in "
                                        r"encoder.layers.0.ffn.act .. encoder.layers.1.ffn.act"),
    ({"lines": ()}, "the corpus is empty"),
    ({"concepts": "{}\n"}, "the concept list is empty"),
])
def test_bad_input(tmp_path, tiny_dirs, kwargs, message):
    corpus, conc = _files(tmp_path, lines=kwargs.pop("lines", ("the red car",)),
                          concepts=kwargs.pop("concepts", "c: [red]\n"))
    with pytest.raises(GuidetuneError, match=message):
        NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, out=str(tmp_path / "o"),
                       layer=kwargs.get("layer", "encoder.layers.1.ffn.act")).run()


def test_jsonl_line_without_text_field(tmp_path, tiny_dirs):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "red car"}\n{"sentence": "blue"}\n')
    _, conc = _files(tmp_path)
    with pytest.raises(GuidetuneError, match=r"c.jsonl:2: missing field 'text' \(fields here: sentence\)"):
        NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=str(corpus), concepts=conc,
                       layer="encoder.layers.1.ffn.act", out=str(tmp_path / "o")).run()


def test_models_of_different_shapes_are_refused(tmp_path, tiny_dirs):
    corpus, conc = _files(tmp_path)
    with pytest.raises(GuidetuneError, match="models must share the architecture"):
        NeuronAnalysis(models=[str(tiny_dirs["bert"]), "minilm"], corpus=corpus, concepts=conc,
                       layer="encoder.layers.1.ffn.act", out=str(tmp_path / "o")).run()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_other_families(tmp_path, tiny_dirs, kind):
    corpus, conc = _files(tmp_path)
    layer = "decoder.layers.0.ffn.act" if kind != "t5" else "encoder.layers.0.ffn.act"
    res = NeuronAnalysis(models=[str(tiny_dirs[kind])], corpus=corpus, concepts=conc, layer=layer,
                         out=str(tmp_path / kind)).run()
    assert res["models"][kind]["neurons"] == (128 if kind == "gpt2" else 64)


def test_which_tokens_count_skip_tokens(tok, tiny_dirs):
    from guidetune.analysis.neurons import collect, skipped_ids
    from guidetune.testing import tiny_model

    model = tiny_model("bert").eval()
    texts = ["the \u2603 car"]  # [CLS] the [UNK] car [SEP]
    assert tok.convert_ids_to_tokens(tok(texts[0])["input_ids"]) == ["[CLS]", "the", "[UNK]", "car", "[SEP]"]
    kw = Keywords({"c": ["car"]})
    counted = {}
    for policy in ("special", "none", "[CLS],[SEP],[UNK]"):
        c, _ = collect(model, tok, [texts], "encoder.layers.0.ffn.act", kw, skip_tokens=policy)
        counted[policy] = c.tokens
    assert counted == {"special": 3, "none": 5, "[CLS],[SEP],[UNK]": 2}  # [UNK] is a word: it counts by default
    assert tok.convert_ids_to_tokens(skipped_ids(tok, "special")) == ["[CLS]", "[SEP]"]  # sorted by id
    with pytest.raises(GuidetuneError, match=r"--skip-tokens: '<s>' is not a token of this tokenizer"):
        skipped_ids(tok, "<s>,[SEP]")


def test_output_says_what_produced_it_and_warns_on_threshold_0_with_gelu(tmp_path, tiny_dirs, caplog):
    import hashlib

    corpus, conc = _files(tmp_path)
    res = NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, skip_tokens="none",
                         layer="encoder.layers.1.ffn.act", out=str(tmp_path / "o")).run()
    assert "threshold 0 with a gelu activation" in caplog.text
    saved = json.loads((tmp_path / "o" / "summary.json").read_text())
    by = saved["produced_by"]
    assert by["layer"] == "encoder.layers.1.ffn.act" and by["threshold"] == 0.0 and by["skip_tokens"] == "none"
    assert by["corpus"]["path"] == corpus
    assert by["corpus"]["sha256"] == hashlib.sha256(open(corpus, "rb").read()).hexdigest()
    assert res["models"]["bert"]["activation"] == "gelu" and res["models"]["bert"]["skipped_tokens"] == []
    caplog.clear()
    NeuronAnalysis(models=[str(tiny_dirs["bert"])], corpus=corpus, concepts=conc, quantile=0.9,
                   layer="encoder.layers.1.ffn.act", out=str(tmp_path / "q")).run()
    assert "threshold 0" not in caplog.text
