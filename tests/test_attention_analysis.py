import json
import re

import pytest
import torch

from guidetune.analysis.attention import AttentionAnalysis, attention_mass
from guidetune.errors import GuidetuneError
from guidetune.layers.capture import Capture
from guidetune.patterns import TokenSet
from guidetune.testing import tiny_model


def test_attention_mass_by_hand(tok):
    model = tiny_model("bert", head="encoder").eval()
    texts = ["it is not here", "a dog", "never say never again"]
    ts = TokenSet("neg", ["not", "never"], tok)
    names = ["encoder.layers.0.attn.probs", "encoder.layers.1.attn.probs"]
    mass, n = attention_mass(model, tok, texts, ts, names, batch_size=2)
    assert n == 2 and mass.shape == (2, 4)  # "a dog" has no set token and is not counted
    expected = torch.zeros(2, 4)
    for t in ("it is not here", "never say never again"):
        enc = dict(tok([t], return_tensors="pt"))
        with Capture(model, names, detach=True) as cap:
            model(**enc)
        on = ts.mask(enc["input_ids"])[0]
        for li, name in enumerate(names):
            expected[li] += cap[name][0][:, :, on].sum(-1).mean(-1) / 2  # mean over queries, then sentences
    assert torch.allclose(torch.from_numpy(mass), expected, atol=1e-6)


def test_corpus_and_sentence_outputs(tmp_path, tiny_dirs):
    corpus = tmp_path / "c.txt"
    corpus.write_text("it is not here\nnever again\nfine weather\n")
    res = AttentionAnalysis(models=[str(tiny_dirs["bert"]), str(tiny_dirs["bert"])], corpus=str(corpus),
                            sentence="A <penguin> is not able to fly.", out=str(tmp_path / "a")).run()
    per = res["mass"]["per_model"]
    assert len(per) == 1 or list(per.values())[0] == list(per.values())[-1]
    rows = (tmp_path / "a" / "attention_mass.csv").read_text().splitlines()
    assert rows[0] == "layer,head,bert,bert,delta" and len(rows) == 1 + 2 * 4
    assert all(r.endswith(",0.0000") for r in rows[1:])  # same model twice: no difference
    page = (tmp_path / "a" / "head_view.html").read_text()
    data = json.loads(re.search(r"const DATA = (.*);\n", page).group(1))
    view = data["bert"]
    assert view["tokens"][0] == "[CLS]" and len(view["attn"]) == 2 and len(view["attn"][0]) == 4
    assert sum(view["marked"]) == 1 and "https://" not in page and "http://" not in page
    assert "&lt;penguin&gt;" in page  # the sentence is escaped
    assert (tmp_path / "a" / "attention_mass.png").stat().st_size > 1000
    assert (tmp_path / "a" / "heads_bert.png").stat().st_size > 1000


def test_models_of_different_shapes_are_refused(tmp_path, tiny_dirs):
    corpus = tmp_path / "c.txt"
    corpus.write_text("it is not here\n")
    with pytest.raises(GuidetuneError, match="the models differ in shape"):
        AttentionAnalysis(models=[str(tiny_dirs["bert"]), "minilm"], corpus=str(corpus), out=str(tmp_path / "out")).run()


def test_no_sentence_with_the_set_is_an_error(tmp_path, tiny_dirs):
    corpus = tmp_path / "c.txt"
    corpus.write_text("fine weather\n")
    with pytest.raises(GuidetuneError, match="no sentence contains a word of the token set 'negation'"):
        AttentionAnalysis(models=[str(tiny_dirs["bert"])], corpus=str(corpus), out=str(tmp_path / "out")).run()
