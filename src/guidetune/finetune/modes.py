"""Which parameters train: full | head | last_layer | lora | qlora (PEFT) | adapter (AdapterHub bottleneck).

``head`` trains only the task head (plus BERT's pooler, which only the head uses); ``last_layer`` the
final block of the stack that feeds the head, the final norm and the head; ``lora`` wraps the model
with PEFT LoRA on the attention projections; ``adapter`` adds a Pfeiffer-style sequential bottleneck
adapter (AdapterHub ``SeqBnConfig``, as in the SpARC paper) after each FFN and trains it plus the head.
``qlora`` loads the base weights in 4 bit (bitsandbytes NF4 through transformers' ``BitsAndBytesConfig``,
:func:`qlora_load_kwargs`), prepares them with PEFT's ``prepare_model_for_kbit_training`` and adds the
same LoRA as ``lora``; it needs the optional extra ``pip install guidetune[qlora]`` and a CUDA GPU.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch.nn as nn

from ..config import FinetuneSpec
from ..layers.names import LayerScheme, base_of, family_of, has_table, unwrap

log = logging.getLogger(__name__)

ADAPTER_NAME = "guidetune"
_PEFT_TASK = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "seq2seq_lm": "SEQ_2_SEQ_LM",
              "encoder": "FEATURE_EXTRACTION", "mlm": None}


def head_modules(model: nn.Module) -> list[nn.Module]:
    """Task-head modules: everything outside the bare transformer, plus the post-block norm/pooler."""
    hf = unwrap(model)
    # Modules between the last block and the head come from the layer table (none for a type without one).
    post = family_of(hf.config).post if has_table(hf.config) else ()
    base = base_of(model)
    mods = []
    if base is hf:  # T5 heads keep encoder/decoder at the top level
        mods += [m for n, m in hf.named_children() if n in ("lm_head", "classification_head", "qa_outputs")]
    else:
        mods += [m for _, m in hf.named_children() if m is not base]
    for path in post:
        with contextlib.suppress(AttributeError):  # e.g. a BERT built without its pooler
            mods.append(base.get_submodule(path))
    return mods


def _set_trainable(modules: list[nn.Module]) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(True)


def apply_mode(model: nn.Module, spec: FinetuneSpec, head: str) -> nn.Module:
    """Freeze/wrap ``model`` for ``spec.mode``; returns the model to train (maybe a PEFT wrapper)."""
    if spec.mode == "full":  # needs no layer table: any model type trains
        model.requires_grad_(True)
        if spec.freeze_embeddings:
            model.get_input_embeddings().requires_grad_(False)
        return model
    if spec.mode in ("head", "last_layer"):
        model.requires_grad_(False)
        mods = head_modules(model)
        if spec.mode == "last_layer":
            scheme = LayerScheme.from_model(model)
            stack = "decoder" if "decoder" in scheme.counts else "encoder"
            blocks = base_of(model).get_submodule(scheme.family.stacks[stack])
            mods.append(blocks[len(blocks) - 1])
        _set_trainable(mods)
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out_emb is not None and out_emb.weight is model.get_input_embeddings().weight:
            log.info("the LM head is tied to the input embeddings, so training the head trains the embeddings too")
        return model
    if spec.mode == "qlora":
        from peft import prepare_model_for_kbit_training

        # Casts norms/head to float32 and freezes the 4-bit base; checkpointing is the Trainer's
        # (train.gradient_checkpointing, non-reentrant), so PEFT does not switch on its reentrant kind.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if spec.mode in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        task_type = _PEFT_TASK[head]
        cfg = LoraConfig(
            r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            # without a layer table PEFT's own per-model-type defaults apply (target_modules=None)
            target_modules=spec.lora_target_modules or (
                list(family_of(unwrap(model).config).lora_targets) if has_table(unwrap(model).config) else None),
            task_type=task_type,
        )
        return get_peft_model(model, cfg)
    if spec.mode == "adapter":
        import adapters
        from adapters import SeqBnConfig

        adapters.init(model)
        # While activating, adapters' own reset_adapter() opens a forward context before the adapter is
        # active and logs "There are adapters available but none are activated" (adapter-hub/adapters
        # #815); the adapter is active afterwards (checked in tests), so that one message is muted here.
        mixin_log = logging.getLogger("adapters.model_mixin")
        mute = lambda record: "none are activated" not in record.getMessage()  # noqa: E731
        mixin_log.addFilter(mute)
        try:
            model.add_adapter(ADAPTER_NAME, config=SeqBnConfig(reduction_factor=spec.adapter_reduction_factor))
            model.train_adapter(ADAPTER_NAME)
        finally:
            mixin_log.removeFilter(mute)
        _set_trainable(head_modules(model))
        return model
    raise ValueError(f"unknown fine-tune mode {spec.mode!r}")


QLORA_HINT = "finetune.mode: qlora needs bitsandbytes with a CUDA GPU: pip install guidetune[qlora]"


def require_qlora() -> None:
    """One-line error unless bitsandbytes and a CUDA GPU are both here (checked before a run is written)."""
    import importlib.util

    import torch

    from ..errors import GuidetuneError

    if importlib.util.find_spec("bitsandbytes") is None:
        raise GuidetuneError(f"{QLORA_HINT} (bitsandbytes is not installed)")
    if not torch.cuda.is_available():
        raise GuidetuneError(f"{QLORA_HINT} (torch sees no CUDA GPU here; use finetune.mode=lora on this machine)")


def qlora_load_kwargs(spec: FinetuneSpec) -> dict:
    """``from_pretrained`` arguments that load the base model in 4 bit on this process's GPU."""
    import os

    import torch
    from transformers import BitsAndBytesConfig

    require_qlora()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.qlora_quant_type,
                               bnb_4bit_use_double_quant=spec.qlora_double_quant,
                               bnb_4bit_compute_dtype=getattr(torch, spec.qlora_compute_dtype))
    # Under torchrun / accelerate each process loads its own copy onto its own GPU.
    return {"quantization_config": quant, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def parameter_report(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts (shared/tied tensors counted once)."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total, "trainable_pct": round(100.0 * trainable / max(total, 1), 4)}


def trainable_state(model: nn.Module) -> dict:
    """State dict of the trainable parameters only (what a non-full mode changed)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}


def save_finetuned(model: nn.Module, tokenizer, directory: str | Path, mode: str) -> Path:
    """Save the fine-tuned model atomically: into a temporary sibling directory, then renamed.

    ``full`` writes a plain Hugging Face model directory; the other modes write only the trained
    parameters (``trainable.safetensors``), which :func:`load_finetuned` puts back on the base model,
    plus the ecosystem's own format (a PEFT adapter directory, or an AdapterHub adapter) for reuse.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if mode == "full":
            unwrap(model).save_pretrained(tmp, safe_serialization=True)
        else:
            save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
            if mode in ("lora", "qlora"):
                model.save_pretrained(tmp / "peft")
            elif mode == "adapter":
                model.save_adapter(str(tmp / "adapter"), ADAPTER_NAME)
        tokenizer.save_pretrained(tmp)
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_trainable(model: nn.Module, path: str | Path) -> None:
    """Load ``trainable.safetensors`` onto a model prepared with the same mode; every key must match."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = model.state_dict()
    missing = [k for k in state if k not in own]
    if missing:
        raise ValueError(f"{path}: {len(missing)} saved tensors have no place in this model, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False)
