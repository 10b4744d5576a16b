"""Record activations and attention probabilities by canonical name during a forward pass.

    with Capture(model, ["encoder.final", "encoder.layers.2.attn.probs"]) as cap:
        out = model(**batch)
    h = cap["encoder.layers.5.out"]                            # [batch, seq, hidden], keeps its graph
    p = cap.attention("encoder.layers.2.attn.probs", [0, 1])  # [batch, 2, query, key]
    m = cap.token_mask("encoder.layers.5.out")                # [batch, seq] bool, False on padding

Only the requested names get hooks; every hook is removed on exit, also when the forward raises.
Tensors keep their autograd graph (so a loss on them trains the model) unless ``detach=True``
(analysis). Costs: an ``out``/``ffn.*`` capture only keeps a reference to a tensor the forward computes
anyway; an ``attn.probs`` capture adds one [query x key] matmul + softmax per requested head, computed
lazily on first access from the queries and keys, while the model itself keeps its fast attention
implementation (SDPA) in every layer. Models that call attention through transformers' attention
interface are switched to guidetune's registered wrapper while inside the ``with`` block and restored
after (:mod:`guidetune.layers.interface`); the others use the adapters of
:mod:`guidetune.layers.attention`. With nothing requested no hook is registered at all. If a hooked
module runs twice inside one ``with`` block
(e.g. ``generate``), the last call wins. Gradient checkpointing (non-reentrant, as
``train.gradient_checkpointing`` sets it) re-runs blocks in the backward pass after the ``with`` block
has exited and removed the hooks, so each activation is recorded once and keeps its graph: terms and
gradients equal the run without checkpointing (tests/test_checkpointing.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn as nn

from .attention import AttnInputs, install_attention_hooks
from .interface import switched
from .names import LayerScheme, Resolved, resolve, unwrap


class Captures(Mapping[str, torch.Tensor]):
    """Read-only view of what one forward pass produced, by canonical name."""

    def __init__(self, resolved: list[Resolved], expand=None):
        self._resolved = {r.name: r for r in resolved}
        self._expand = expand  # user name (alias) -> canonical names, so cap["encoder.final"] reads too
        self._acts: dict[str, torch.Tensor] = {}
        self._attn: dict[str, AttnInputs] = {}
        self._probs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}  # tensors the model was called with (masks, labels)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._resolved and getattr(self, "_expand", None) is not None:
            try:
                found = self._expand(name)
            except Exception:  # noqa: BLE001 -- not a layer name: the KeyError below says what was captured
                found = []
            name = found[0] if len(found) == 1 else name
        if name in self._acts:
            return self._acts[name]
        if name in self._attn:
            if name not in self._probs:
                self._probs[name] = self._attn[name].probs()
            return self._probs[name]
        if name in self._resolved:
            raise KeyError(f"'{name}' was requested but its module did not run in this forward pass")
        raise KeyError(f"'{name}' was not captured; captured: {', '.join(self._resolved)}")

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self._resolved if n in self._acts or n in self._attn])

    def __len__(self) -> int:
        return len(self._acts) + len(self._attn)

    def attention(self, name: str, heads: list[int] | None = None) -> torch.Tensor:
        """Probabilities of ``heads`` only (all if None): [batch, len(heads), query, key], float32."""
        if name not in self._attn:
            raise KeyError(f"'{name}' is not a captured attention layer")
        if heads is None:
            return self[name]
        return self._attn[name].probs(heads)

    def num_heads(self, name: str) -> int:
        return self._attn[name].num_heads

    def stack(self, name: str) -> str:
        return self._resolved[name].stack

    def seq2seq_decoder(self, name: str) -> bool:
        """True when ``name`` lives in the decoder of an encoder-decoder model (its own target mask)."""
        r = self._resolved[name]
        return r.family.encoder_decoder and r.stack == "decoder"

    def token_mask(self, name: str) -> torch.Tensor:
        """[batch, seq] bool: the non-padding positions of the sequence ``name`` runs over."""
        t = self._acts[name] if name in self._acts else self._attn[name].q
        seq_dim = 2 if name in self._attn else 1
        b, n = t.shape[0], t.shape[seq_dim]
        if self.seq2seq_decoder(name):
            mask = self.inputs.get("decoder_attention_mask")
            if mask is None and self.inputs.get("labels") is not None:
                mask = self.inputs["labels"] != -100
        else:
            mask = self.inputs.get("attention_mask")
        if mask is None or mask.shape != (b, n):
            return torch.ones(b, n, dtype=torch.bool, device=t.device)
        return mask.bool()


class Capture:
    """Context manager that hooks exactly the requested canonical names (see module docstring)."""

    def __init__(self, model: nn.Module, names: list[str] | str, *, detach: bool = False):
        self.model = model
        self.resolved = resolve(model, names) if names else []
        self.detach = detach
        self._handles: list = []
        self._interface: dict[nn.Module, object] = {}  # attention modules captured through the interface
        self._switch = None
        self._calls: dict[str, int] = {}  # shared layers: calls of each hooked module in this forward
        self._batch: int | None = None  # batch size of the current forward (for ``flat`` sites)
        self._expand = lambda name: LayerScheme.from_model(model).expand(name)  # aliases on read
        self.captures = Captures(self.resolved, self._expand)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.resolved]

    def _keep(self, t: torch.Tensor, r: Resolved | None = None) -> torch.Tensor:
        t = t.detach() if self.detach else t
        if r is not None and r.flat and t.dim() == 2 and self._batch:
            t = t.view(self._batch, -1, t.shape[-1])
        return t.clone() if r is not None and r.copy else t

    def _gated(self, r: Resolved, fn):
        """For shared layers (ALBERT), run ``fn`` only on the ``r.call``-th call of the module in a forward."""
        if r.call is None:
            return fn
        calls = self._calls

        def gated(*args):
            n = calls.get(r.name, 0)
            calls[r.name] = n + 1
            if n == r.call:
                fn(*args)

        return gated

    def _hook(self, r: Resolved) -> list:
        acts, attn = self.captures._acts, self.captures._attn
        if r.hook == "output":
            return [r.module.register_forward_hook(self._gated(
                r, lambda m, a, o: acts.__setitem__(r.name, self._keep(o[0] if isinstance(o, tuple) else o, r))
            ))]
        if r.hook == "input":
            return [r.module.register_forward_pre_hook(
                self._gated(r, lambda m, a: acts.__setitem__(r.name, self._keep(a[0], r))))]

        def store(inp: AttnInputs) -> None:
            if self.detach:
                inp.q = inp.q.detach()
                inp.k = inp.k.detach() if inp.k is not None else None
                inp.full = inp.full.detach() if inp.full is not None else None
            attn[r.name] = inp
            self.captures._probs.pop(r.name, None)

        if r.family.attention == "interface":
            self._interface[r.module] = self._gated(r, store)
            return []
        return install_attention_hooks(r.family.attention, r.module, self._gated(r, store))

    def __enter__(self) -> Captures:
        self.captures = Captures(self.resolved, self._expand)
        if not self.resolved:
            return self.captures
        inputs = self.captures.inputs
        keys = ("attention_mask", "decoder_attention_mask", "labels")

        def grab(m, args, kwargs):
            self._calls.clear()
            first = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
            self._batch = first.shape[0] if isinstance(first, torch.Tensor) else None
            inputs.update({k: kwargs[k] for k in keys if isinstance(kwargs.get(k), torch.Tensor)})

        try:
            self._handles.append(unwrap(self.model).register_forward_pre_hook(grab, with_kwargs=True))
            for r in self.resolved:
                self._handles += self._hook(r)
            if self._interface:  # route attention through guidetune's registered function while inside
                self._switch = switched(unwrap(self.model), self._interface)
                self._switch.__enter__()
        except BaseException:
            self._remove()
            raise
        return self.captures

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._switch is not None:
            switch, self._switch = self._switch, None
            switch.__exit__(None, None, None)
        self._interface = {}

    def __exit__(self, *exc) -> None:
        self._remove()
