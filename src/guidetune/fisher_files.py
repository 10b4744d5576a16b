"""Reading Fisher files: ``X.safetensors`` with its ``X.manifest.json`` (written by
``guidetune.analysis.fisher_io``), checked against the model at hand; and the pretrained names of
parameters seen through PEFT / AdapterHub wrapping. Below the regularizers, which read Fisher files
(``fisher_dropout``), and the analyses, which write and read them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import GuidetuneError

FORMAT = "guidetune-fisher-1"


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".manifest.json")


def load(path: str | Path, model=None) -> tuple[dict[str, torch.Tensor], dict]:
    """(fisher tensors, metadata); with ``model``, checks that the file belongs to it. One line for a
    missing, corrupt or incomplete file, or one estimated on another model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GuidetuneError(f"Fisher file not found: '{path}'" + (" (a directory)" if path.is_dir() else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise GuidetuneError(f"'{path}' is not a guidetune Fisher file (format {meta.get('format')!r})")
            fisher = {k: f.get_tensor(k) for k in f.keys()}
    except GuidetuneError:
        raise
    except Exception as e:  # safetensors raises its own error types for truncated/garbled files
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise GuidetuneError(f"Fisher file '{path}' is corrupt or not a safetensors file ({first}); re-run guidetune fisher") from None
    _check_manifest(path, meta)
    if model is not None:
        from .layers.names import unwrap

        hf = unwrap(model)
        mine, theirs = getattr(hf.config, "model_type", None), meta.get("model_type")
        if theirs and mine and theirs != mine:
            raise GuidetuneError(f"Fisher file '{path}' was estimated on a '{theirs}' model; this model is "
                                 f"'{mine}': estimate one with guidetune fisher on this model")
        own = {original_name(n): tuple(p.shape) for n, p in hf.named_parameters() if original_name(n) is not None}
        check_compatible({n: tuple(t.shape) for n, t in fisher.items()}, own, str(path))
    return fisher, meta


def _check_manifest(path: Path, meta: dict) -> None:
    mp = manifest_path(path)
    try:
        man = json.loads(mp.read_text())
    except FileNotFoundError:
        raise GuidetuneError(f"Fisher file '{path}' has no manifest ({mp.name}): the set is incomplete "
                             f"(a write was interrupted); re-run guidetune fisher") from None
    except (ValueError, UnicodeDecodeError):
        raise GuidetuneError(f"Fisher manifest '{mp}' is not valid JSON; re-run guidetune fisher") from None
    if not isinstance(man, dict) or man.get("set_id") != meta.get("set_id"):
        raise GuidetuneError(f"Fisher file '{path}' does not belong to its manifest {mp.name} (another write's "
                             f"files are mixed); re-run guidetune fisher")


_WRAPPER_PARTS = (".base_layer", ".original_module")  # PEFT's wrappers around the original modules
_ADDED = ("lora_", ".modules_to_save.", ".adapters.", "adapter_")  # parameters a fine-tune mode adds


def original_name(name: str) -> str | None:
    """The pretrained model's name of a parameter seen through PEFT/AdapterHub wrapping (None if added)."""
    if any(part in name for part in _ADDED):
        return None
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def check_compatible(fisher_names: dict[str, tuple], model_params: dict[str, tuple], source: str) -> None:
    """One line naming the parameters that differ between a Fisher file and the model at hand."""
    missing = [n for n in model_params if n not in fisher_names]
    extra = [n for n in fisher_names if n not in model_params]
    shape = [n for n in model_params if n in fisher_names and tuple(fisher_names[n]) != tuple(model_params[n])]
    if missing or extra or shape:
        parts = []
        if shape:
            n = shape[0]
            parts.append(f"{len(shape)} differ in shape (e.g. {n}: {list(fisher_names[n])} in the file, "
                         f"{list(model_params[n])} in the model)")
        if missing:
            parts.append(f"{len(missing)} are missing from the file (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} are not in the model (e.g. {extra[0]})")
        raise GuidetuneError(f"Fisher file '{source}' was computed for a different model: " + "; ".join(parts))
