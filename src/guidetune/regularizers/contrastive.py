"""``contrastive``: similar questions get similar activations (SpARC eq. 2), optionally with a queue."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import GuidetuneError
from ..spec import check, finish
from .base import REGULARIZERS, expand_layers
from .tokens import select

Similarity = Literal["pairwise_average", "mean_pool", "eos", "answer", "entity", "last"]


def sequence_embeddings(x: torch.Tensor, mask: torch.Tensor, how: str, batch: dict, seq2seq_dec: bool) -> torch.Tensor:
    """[batch, dim] vectors e with sequence similarity s(i, j) = e_i . e_j.

    ``pairwise_average``: mean cosine over all pairs of non-padding tokens of the two sequences, which
    equals the dot product of the means of the unit-normalised token vectors (so O(batch * dim), not
    O(batch^2 * seq^2)); ``mean_pool``: cosine of the mean token vectors; ``eos | answer | entity |
    last``: cosine of the token at that index.
    """
    x = x.float()
    m = mask.float().unsqueeze(-1)
    if how == "pairwise_average":
        return (F.normalize(x, dim=-1) * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "mean_pool":
        return F.normalize((x * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)
    vecs, _ = select(x, mask, how, batch, seq2seq_dec)
    return F.normalize(vecs, dim=-1)


@REGULARIZERS.register("contrastive")
@dataclass
class Contrastive:
    """Similarity loss over positive pairs of similar questions, other examples as negatives (SpARC eq. 2).

    The batch holds pairs (x, x') marked by the task (``gt_pair_id``; -1 = unpaired, a negative only).
    With s the sequence similarity (see ``similarity``), anchors i the paired examples and p(i) the
    partner of i:

    * ``form: paper`` (eq. 2 as printed):  sum_pairs (1 - s(x, x')) + sum_i sum_{j != i, p(i)} s(i, j),
      i over anchors, j over every other example of the batch (and the queue); ``reduction: mean``
      divides by the number of anchors;
    * ``form: infonce`` (default): mean over anchors of
      -log( exp(s(i,p(i))/T) / (exp(s(i,p(i))/T) + sum_{j != i, p(i)} exp(s(i,j)/T)) ).

    ``queue_size > 0`` adds the embeddings of earlier batches as extra negatives (a MoCo-style FIFO
    queue, the remedy SpARC proposes for small batches). Unlike MoCo there is no momentum encoder: the
    queue holds detached embeddings from the model being trained. The queue is per process and per layer,
    and is saved with every checkpoint.
    """

    layers: list[str] = field(default_factory=lambda: ["final"], metadata={"help": "canonical layer names"})
    form: Literal["infonce", "paper"] = field(default="infonce", metadata={"help": "infonce | paper (eq. 2)"})
    similarity: Similarity = field(default="pairwise_average", metadata={"help": "sequence similarity"})
    temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature"})
    queue_size: int = field(default=0, metadata={"help": "extra negatives kept from earlier batches (0: off)"})
    reduction: Literal["mean", "sum"] = "mean"

    def __post_init__(self):
        e: list[str] = []
        check(e, len(self.layers) > 0, "layers: give at least one layer name")
        check(e, self.temperature > 0, f"temperature: must be > 0, got {self.temperature}")
        check(e, self.queue_size >= 0, f"queue_size: must be >= 0, got {self.queue_size}")
        finish(e)
        self.captured: list[str] = []
        self._queues: dict[str, torch.Tensor] = {}

    def setup(self, model, tokenizer) -> None:
        self.captured = expand_layers(model, self.layers)

    def state_dict(self) -> dict:
        """The negative queues (saved with every checkpoint, so a resumed run continues with them)."""
        return {name: q.cpu() for name, q in self._queues.items()}

    def load_state_dict(self, state: dict) -> None:
        self._queues = dict(state)

    def loss(self, captures, batch):
        if "gt_pair_id" not in batch:
            raise GuidetuneError("contrastive: this task provides no positive pairs; use a task with pairs "
                                 "(e.g. beliefbank with task.pairs: linked | adjacent | embedding)")
        pair = batch["gt_pair_id"].to(captures[self.captured[0]].device)
        parts = {}
        for name in self.captured:
            e = sequence_embeddings(captures[name], captures.token_mask(name), self.similarity, batch,
                                    captures.seq2seq_decoder(name))
            parts[name] = self._layer_loss(name, e, pair)
        total = sum(parts.values())
        return (total, parts) if len(parts) > 1 else total

    def _layer_loss(self, name: str, e: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        b = e.shape[0]
        eye = torch.eye(b, dtype=torch.bool, device=e.device)
        same = (pair[:, None] == pair[None, :]) & (pair[:, None] >= 0) & ~eye  # [b, b] partner mask
        anchors = same.any(1)
        if not anchors.any():
            return e.sum() * 0.0
        sims = e @ e.T  # [b, b]
        queue = self._queues.get(name)
        if queue is not None and queue.device != e.device:
            queue = queue.to(e.device)
        q_sims = e @ queue.T if queue is not None else e.new_zeros(b, 0)  # [b, k]
        negatives = ~same & ~eye
        pos = (sims * same).sum(1)  # exactly one partner per anchor
        if self.form == "paper":
            per_anchor = (sims * negatives).sum(1) + q_sims.sum(1)
            value = (1 - pos[anchors]).sum() / 2 + per_anchor[anchors].sum()  # each pair once, as printed
            value = value / anchors.sum() if self.reduction == "mean" else value
        else:
            neg = sims.masked_fill(~negatives, float("-inf"))
            logits = torch.cat([pos[:, None], neg, q_sims], dim=1)[anchors] / self.temperature
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=e.device)
            value = F.cross_entropy(logits, target, reduction=self.reduction)
        if self.queue_size:
            new = e[anchors].detach()
            old = queue if queue is not None else new[:0]
            self._queues[name] = torch.cat([new, old])[: self.queue_size]
        return value
