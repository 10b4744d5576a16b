"""One place that decides where a model runs: ``--device auto|cpu|cuda|cuda:N|mps`` and ``--dtype``.

Every command that runs a model (eval, fisher, analyze *, ablate) resolves its device here, so that
"auto" means the same everywhere: the process's own GPU under ``torchrun``/``accelerate launch``
(``LOCAL_RANK``), else the first GPU, else the CPU. Training keeps the HF Trainer's own placement.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import GuidetuneError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def resolve_device(spec: str | None = "auto"):
    """``torch.device`` for a user's ``--device`` value; one-line error when it cannot be had."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
            return torch.device("cuda", local)
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise GuidetuneError("--device: 'mps' asked for but this machine has no MPS backend; use --device cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise GuidetuneError(
                f"--device: '{spec}' asked for but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto"
            )
        if spec == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        idx = spec.split(":", 1)[1]
        if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
            raise GuidetuneError(
                f"--device: '{spec}' is not a GPU here; this machine has cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device("cuda", int(idx))
    raise GuidetuneError(f"--device: '{spec}' is not a device; allowed: {', '.join(DEVICE_CHOICES)}")


def resolve_dtype(spec: str | None, device: Any = None):
    """``torch.dtype`` for ``--dtype`` (None -> float32). Half precision on CPU is allowed but slow."""
    import torch

    spec = (spec or "float32").strip().lower()
    if spec not in DTYPE_CHOICES:
        from .errors import did_you_mean

        raise GuidetuneError(f"--dtype: '{spec}' is not allowed.{did_you_mean(spec, DTYPE_CHOICES)} Allowed: {', '.join(DTYPE_CHOICES)}")
    if spec == "bfloat16" and device is not None and getattr(device, "type", "cpu") == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise GuidetuneError("--dtype: bfloat16 is not supported by this GPU; use float16 or float32")
    return getattr(torch, spec)


def place(model, device: str | None = "auto", dtype: str | None = None):
    """Move ``model`` to the resolved device (and dtype when given); returns (model, torch.device).

    A model loaded with ``device_map`` (accelerate dispatch over several devices) is left where it is.
    """
    if getattr(model, "hf_device_map", None) and len(set(map(str, model.hf_device_map.values()))) > 1:
        import torch

        first = next(model.parameters()).device
        return model, torch.device(first)
    dev = resolve_device(device)
    if dtype is not None:
        model = model.to(dtype=resolve_dtype(dtype, dev))
    return model.to(dev), dev


def to_device(batch: dict, device) -> dict:
    """Tensors of a batch dict moved to ``device`` (other values kept)."""
    return {k: (v.to(device) if hasattr(v, "to") and hasattr(v, "dtype") else v) for k, v in batch.items()}


def add_device_args(parser) -> None:
    """The ``--device`` / ``--dtype`` options every model-running command shares."""
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="inference dtype (default: the model's float32)")
