"""``attention_guidance``: pull chosen attention heads toward a target pattern (seed eq. 2-4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..errors import GuidetuneError
from ..layers.names import LayerScheme, unwrap
from ..patterns import TokenSet, delimiter_ids, fixed_pattern
from ..spec import check, finish
from .base import REGULARIZERS, expand_layers

Pattern = Literal["token_set", "previous", "next", "first", "delimiter", "matrix"]


def _heads_of(config, name: str) -> int:
    for key in ("num_attention_heads", "n_head", "num_heads"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise GuidetuneError(f"cannot tell how many heads '{name}' has")


@REGULARIZERS.register("attention_guidance")
@dataclass
class AttentionGuidance:
    """Squared Frobenius distance between guided heads' attention and a pattern: sum_(k,j) ||H_kj - P_kj||_F^2.

    ``layers`` name blocks or attention sites (``encoder.layers.*`` means their ``attn.probs``;
    ``decoder.layers.2.cross_attn.probs`` picks T5 cross-attention); ``heads`` are guided in every one of
    them. For each example the squared differences are summed over valid (query, key) entries; the
    term is the mean over examples (``reduction: sum``: the sum), summed over guided heads. Padding
    queries and keys are left out, and so are future keys of causal self-attention (their probability
    is 0 by construction, so the pattern is restricted to the keys a query can see).

    ``normalize: true`` (default) scales every pattern row to sum to 1 over the keys it may see -- the
    natural target for a softmax row. Rows with no target token at all are left out of the loss
    (those queries stay untouched). ``normalize: false`` is the seed's binary P of eq. 3, where such rows
    pull all attention toward 0. Per-head values are logged as ``<term>/<layer>.h<j>``.
    """

    layers: list[str] = field(default_factory=lambda: ["final"], metadata={"help": "blocks or attention sites"})
    heads: list[int] = field(default_factory=lambda: [0], metadata={"help": "head indices guided in each layer"})
    pattern: Pattern = field(default="token_set", metadata={"help": "token_set | previous | next | first | "
                                                                    "delimiter | matrix"})
    token_set: str = field(default="negation", metadata={"help": "negation | order | addition | emphasis | file"})
    matrix: str | None = field(default=None, metadata={"help": "pattern: matrix -- .npy file, [query, key]"})
    normalize: bool = field(default=True, metadata={"help": "rows sum to 1 (else the binary P of eq. 3)"})
    reduction: Literal["mean", "sum"] = "mean"

    def __post_init__(self):
        e: list[str] = []
        check(e, len(self.layers) > 0, "layers: give at least one layer")
        check(e, len(self.heads) > 0 and all(h >= 0 for h in self.heads),
              f"heads: give head indices >= 0, got {self.heads}")
        check(e, self.pattern != "matrix" or bool(self.matrix), "matrix: pattern 'matrix' needs a .npy file")
        check(e, self.pattern == "matrix" or not self.matrix,
              f"matrix: used only with pattern: matrix (pattern is '{self.pattern}')")
        finish(e)
        self.captured: list[str] = []
        self._set: TokenSet | None = None
        self._matrix: torch.Tensor | None = None
        self._causal: dict[str, bool] = {}

    def setup(self, model, tokenizer) -> None:
        names = [n if n.endswith("probs") else f"{n}.attn.probs" for n in self.layers]
        self.captured = expand_layers(model, names)
        hf = unwrap(model)
        scheme = LayerScheme.from_model(model)
        for name in self.captured:
            n_heads = _heads_of(hf.config, name)
            bad = [h for h in self.heads if h >= n_heads]
            if bad:
                raise GuidetuneError(f"heads: head {bad[0]} is beyond {name}'s {n_heads} heads (0-{n_heads - 1})")
            stack, _, site = scheme.parse(name)
            self._causal[name] = site == "attn.probs" and stack == "decoder"
            if self.pattern == "next" and self._causal[name]:
                raise GuidetuneError(f"pattern: 'next' cannot be reached by causal self-attention in {name}")
        self._start = getattr(hf.config, "decoder_start_token_id", None)
        if self.pattern == "token_set":
            self._set = TokenSet.load(self.token_set, tokenizer)
        elif self.pattern == "delimiter":
            self._set = _IdSet(delimiter_ids(tokenizer))
        elif self.pattern == "matrix":
            try:
                array = np.load(self.matrix, allow_pickle=False)
                self._matrix = torch.from_numpy(np.asarray(array, dtype=np.float32))
            except (OSError, ValueError, TypeError) as e:
                raise GuidetuneError(f"matrix: cannot read '{self.matrix}' as a numeric .npy array "
                                     f"({str(e).splitlines()[0]})") from None
            if self._matrix.ndim != 2:
                raise GuidetuneError(f"matrix: expected a [query, key] array, got shape {tuple(self._matrix.shape)}")

    def _keys(self, name: str, captures, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Key token ids [batch, key] (None if not needed) and key validity [batch, key]."""
        if captures.seq2seq_decoder(name) and "cross_attn" not in name:  # T5 decoder self-attention
            mask = captures.token_mask(name)
            ids = batch.get("decoder_input_ids")
            if ids is None and "labels" in batch:
                labels = batch["labels"].clamp_min(0)
                ids = torch.cat([torch.full_like(labels[:, :1], self._start or 0), labels[:, :-1]], dim=1)
            return ids, mask
        mask = batch.get("attention_mask")
        ids = batch.get("input_ids")
        if mask is None and ids is not None:
            mask = torch.ones_like(ids)
        return ids, mask.bool()

    def target(self, name: str, ids, key_mask: torch.Tensor, q_len: int) -> torch.Tensor:
        """Unnormalised pattern [batch, query, key] for layer ``name``."""
        b, k_len = key_mask.shape
        if self.pattern in ("token_set", "delimiter"):
            if ids is None:
                raise GuidetuneError(f"pattern '{self.pattern}' needs the input token ids in the batch")
            return self._set.mask(ids.to(key_mask.device))[:, None, :].expand(b, q_len, k_len).float()
        if self.pattern == "matrix":
            if tuple(self._matrix.shape) != (q_len, k_len):
                raise GuidetuneError(f"matrix: pattern shape {tuple(self._matrix.shape)} does not fit {name}'s "
                                     f"attention of [query, key] = [{q_len}, {k_len}]")
            return self._matrix.to(key_mask.device)[None].expand(b, q_len, k_len)
        return fixed_pattern(self.pattern, q_len, k_len, key_mask)

    def loss(self, captures, batch):
        total, parts = None, {}
        for name in self.captured:
            probs = captures.attention(name, self.heads)  # [batch, heads, query, key]
            _, _, q_len, k_len = probs.shape
            ids, k_mask = self._keys(name, captures, batch)
            k_mask = k_mask.to(probs.device)
            allowed = captures.token_mask(name)[:, :, None] & k_mask[:, None, :]  # [batch, query, key]
            if self._causal[name]:
                allowed &= torch.ones(q_len, k_len, dtype=torch.bool, device=probs.device).tril(k_len - q_len)
            p = self.target(name, ids, k_mask, q_len) * allowed
            rows = allowed.any(-1)
            if self.normalize:
                row_sum = p.sum(-1, keepdim=True)
                rows &= row_sum[..., 0] > 0
                p = p / row_sum.clamp_min(1e-12)
            weight = (allowed & rows[..., None]).float()[:, None]  # [batch, 1, query, key]
            per_head = (((probs - p[:, None]) ** 2) * weight).sum((2, 3))  # [batch, heads]
            per_head = per_head.mean(0) if self.reduction == "mean" else per_head.sum(0)
            short = name.replace(".layers.", "").replace(".attn.probs", "").replace(".cross_attn.probs", ".x")
            for j, h in enumerate(self.heads):
                parts[f"{short}.h{h}"] = per_head[j]
            total = per_head.sum() if total is None else total + per_head.sum()
        return total, parts


class _IdSet:
    """A token set given directly as ids (the delimiter pattern)."""

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(ids)

    def mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(input_ids, self.ids.to(input_ids.device))
