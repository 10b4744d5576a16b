"""Token selection shared by the activation regularizers and analyses.

``all``     every non-padding token;
``last``    the last non-padding token of each sequence;
``eos``     the end-of-sequence token ([SEP] for BERT tokenizers) as marked by the collator in
            ``gt_eos_index``; the last non-padding token when the collator did not mark one;
``answer``  the last token of the answer prompt (``gt_answer_index``, set by question-answering tasks);
``entity``  the last token of the entity a question is about (``gt_entity_index``).

Indices refer to the input sequence; on the decoder of an encoder-decoder model every selection
except ``all`` picks the last target token.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..errors import GuidetuneError

TokenSelection = Literal["all", "last", "eos", "answer", "entity"]
_INDEX_KEY = {"eos": "gt_eos_index", "answer": "gt_answer_index", "entity": "gt_entity_index"}


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """[batch] index of the last True of each row of a [batch, seq] mask (works for left padding too)."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), pos, -1).max(dim=1).values.clamp_min(0)


def select(x: torch.Tensor, mask: torch.Tensor, how: str, batch: dict, decoder_of_seq2seq: bool = False):
    """Pick token vectors from ``x`` [batch, seq, dim].

    Returns ``(vectors [n, dim], example [n])`` where ``example[i]`` is the batch row of vector ``i``.
    """
    b = x.shape[0]
    if how == "all":
        rows, cols = mask.nonzero(as_tuple=True)
        return x[rows, cols], rows
    if how == "last" or decoder_of_seq2seq:
        idx = last_index(mask)
    else:
        key = _INDEX_KEY[how]
        if key in batch:
            idx = batch[key].to(x.device).long()
        elif how == "eos":
            idx = last_index(mask)
        else:
            raise GuidetuneError(
                f"tokens: '{how}' needs a task that marks {how} tokens ({key}); this task does not. "
                "Available here: all, last, eos"
            )
    rows = torch.arange(b, device=x.device)
    return x[rows, idx], rows
