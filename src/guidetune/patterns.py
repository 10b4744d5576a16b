"""Attention target patterns: token sets matched through the tokenizer, and fixed positional patterns.

A pattern gives, for a batch, a target P [batch, query, key] for an attention head (seed eq. 3:
P[p, q] = 1 when key token q belongs to the set). Token sets come built in (``negation``, ``order``,
``addition``, ``emphasis``: word lists written for guidetune, in ``data/tokensets/``) or from a text
file (one word or phrase a line, ``#`` comments). Words are matched as token subsequences through
the model's tokenizer, so a word split into several sub-word pieces marks every piece; variants with
a leading space and capitalised are tried so byte-level BPE (GPT-2) and WordPiece (BERT) both match.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from .errors import GuidetuneError

BUILTIN_SETS = ("negation", "order", "addition", "emphasis")
FIXED = ("previous", "next", "first", "delimiter")
_PUNCT = (".", ",", ";", ":", "?", "!")


def read_words(name_or_path: str) -> tuple[str, list[str]]:
    """(name, words) of a built-in set or a word-list file."""
    if name_or_path in BUILTIN_SETS:
        path = Path(str(resources.files("guidetune") / "data" / "tokensets" / f"{name_or_path}.txt"))
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise GuidetuneError(f"token_set: '{name_or_path}' is neither a built-in set "
                                 f"({', '.join(BUILTIN_SETS)}) nor a word-list file")
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip() and not w.startswith("#")]
    if not words:
        raise GuidetuneError(f"token_set: '{name_or_path}' holds no words")
    return path.stem, words


class TokenSet:
    """A word list compiled to token-id sequences for one tokenizer."""

    def __init__(self, name: str, words: list[str], tokenizer):
        self.name, self.words = name, words
        self.seqs: dict[int, list[tuple[int, ...]]] = {}
        self.unmatched: list[str] = []
        unk = getattr(tokenizer, "unk_token_id", None)
        for w in words:
            found = False
            for v in {w, " " + w, w.capitalize(), " " + w.capitalize()}:
                ids = tuple(tokenizer(v, add_special_tokens=False)["input_ids"])
                if ids and unk not in ids:
                    found = True
                    if ids not in self.seqs.setdefault(len(ids), []):
                        self.seqs[len(ids)].append(ids)
            if not found:
                self.unmatched.append(w)
        if not self.seqs:
            raise GuidetuneError(f"token set '{name}': the tokenizer can match none of its words "
                                 f"({', '.join(words[:10])}{', ...' if len(words) > 10 else ''})")

    @classmethod
    def load(cls, name_or_path: str, tokenizer) -> "TokenSet":
        return cls(*read_words(name_or_path), tokenizer)

    def mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] bool: positions covered by any word of the set."""
        out = torch.zeros_like(input_ids, dtype=torch.bool)
        for n, seqs in self.seqs.items():
            pat = torch.tensor(seqs, device=input_ids.device)  # [s, n]
            if n == 1:
                out |= torch.isin(input_ids, pat[:, 0])
                continue
            if input_ids.shape[1] < n:
                continue
            windows = input_ids.unfold(1, n, 1)  # [batch, seq - n + 1, n]
            hit = (windows[:, :, None, :] == pat[None, None]).all(-1).any(-1)  # [batch, seq - n + 1]
            for j in range(n):
                out[:, j:j + hit.shape[1]] |= hit
        return out


def delimiter_ids(tokenizer) -> list[int]:
    ids = {getattr(tokenizer, a, None) for a in ("sep_token_id", "eos_token_id", "cls_token_id", "bos_token_id")}
    for p in _PUNCT:
        ids.update(tokenizer(p, add_special_tokens=False)["input_ids"])
    return sorted(i for i in ids if i is not None)


def fixed_pattern(kind: str, q_len: int, k_len: int, key_mask: torch.Tensor) -> torch.Tensor:
    """[batch, query, key] targets of the positional patterns (``delimiter`` is a token set)."""
    b = key_mask.shape[0]
    dev = key_mask.device
    q = torch.arange(q_len, device=dev)[:, None]
    k = torch.arange(k_len, device=dev)[None, :]
    if kind == "previous":
        base = (k == q - 1)
    elif kind == "next":
        base = (k == q + 1)
    elif kind == "first":
        first = key_mask.float().argmax(1)  # first real key (left padding safe)
        return (k[None] == first[:, None, None]).expand(b, q_len, k_len).float()
    else:
        raise ValueError(kind)
    return base[None].expand(b, q_len, k_len).float()
