"""Similar-question pairs for the contrastive loss (SpARC section 4), and a sampler that keeps them whole.

``linked``     (X -> Y, Y -> Z): "Is a dog a mammal?" (believed yes) with "Does a mammal have fur?"; the
               entity they share is Y (the object of the first question, the subject of the second).
``adjacent``   same subject, different properties: "Is a dog a mammal?" with "Can a dog bark?".
``embedding``  nearest neighbour by cosine of sentence embeddings (the packaged MiniLM through
               sentence-transformers), kept when above a threshold; by default the threshold is the
               mean cosine of the linked pairs, as in the paper.

A pair is ``(i, j, role_i, role_j)``: indices into the question list and which span ("subject" or
"object") holds the shared entity in each question.
"""
from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import GuidetuneError
from .data import Question

Pair = tuple[int, int, str, str]


def linked_pairs(questions: list[Question], seed: int, max_pairs: int) -> list[Pair]:
    by_subject = defaultdict(list)
    for i, q in enumerate(questions):
        by_subject[q.subject].append(i)
    candidates = []
    for i, q in enumerate(questions):
        relation, obj = q.target.split(",", 1)
        if relation == "IsA" and q.belief and obj != q.subject:
            candidates += [(i, j, "object", "subject") for j in by_subject.get(obj, ())]
    return _cap(candidates, seed, max_pairs)


def adjacent_pairs(questions: list[Question], seed: int, max_pairs: int) -> list[Pair]:
    by_subject = defaultdict(list)
    for i, q in enumerate(questions):
        by_subject[q.subject].append(i)
    rng = random.Random(f"adjacent:{seed}")
    pairs = []
    for subject in sorted(by_subject):
        idx = by_subject[subject][:]
        if len(idx) < 2:
            continue
        rng.shuffle(idx)
        pairs += [(idx[k], idx[k + 1], "subject", "subject") for k in range(0, len(idx) - 1, 2)]
        if len(idx) % 2:
            pairs.append((idx[-1], idx[0], "subject", "subject"))
    return _cap(pairs, seed, max_pairs)


def embed(texts: list[str], model: str = "minilm", batch_size: int = 128) -> np.ndarray:
    """L2-normalised sentence embeddings [n, dim] from a sentence-transformers model."""
    from sentence_transformers import SentenceTransformer

    from ..models import resolve_name

    st = SentenceTransformer(resolve_name(model), device="cpu" if not torch.cuda.is_available() else None)
    return st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=len(texts) > 2000)


def embedding_pairs(questions: list[Question], seed: int, max_pairs: int, threshold: float | None,
                    model: str = "minilm") -> tuple[list[Pair], float]:
    """(pairs, threshold used): each question with its nearest neighbour above the threshold."""
    emb = embed([q.text for q in questions], model)
    if threshold is None:
        linked = linked_pairs(questions, seed, 0)
        if not linked:
            raise GuidetuneError("task.pair_threshold: no linked pairs to take the mean cosine from; give a value")
        threshold = float(np.mean([emb[i] @ emb[j] for i, j, _, _ in linked]))
    found = set()
    for start in range(0, len(emb), 1024):
        sims = emb[start:start + 1024] @ emb.T  # [block, n]
        for r in range(sims.shape[0]):
            sims[r, start + r] = -2.0  # not itself
        best = sims.argmax(1)
        for r, j in enumerate(best):
            i = start + r
            if sims[r, j] >= threshold and questions[i].text != questions[j].text:
                found.add((min(i, j), max(i, int(j))))
    pairs = [(i, j, "subject", "subject") for i, j in sorted(found)]
    return _cap(pairs, seed, max_pairs), threshold


def _cap(pairs: list[Pair], seed: int, max_pairs: int) -> list[Pair]:
    seen, unique = set(), []
    for p in pairs:
        if (p[0], p[1]) not in seen and (p[1], p[0]) not in seen:
            seen.add((p[0], p[1]))
            unique.append(p)
    if max_pairs and len(unique) > max_pairs:
        unique = random.Random(f"cap:{seed}").sample(unique, max_pairs)
    return unique


def mine(method: str, questions: list[Question], seed: int, max_pairs: int, threshold: float | None) -> tuple[list[Pair], dict]:
    """Pairs by ``method`` plus a report: counts, questions covered, threshold."""
    if method == "linked":
        pairs, thr = linked_pairs(questions, seed, max_pairs), None
    elif method == "adjacent":
        pairs, thr = adjacent_pairs(questions, seed, max_pairs), None
    elif method == "embedding":
        pairs, thr = embedding_pairs(questions, seed, max_pairs, threshold)
    else:
        raise ValueError(method)
    if not pairs:
        raise GuidetuneError(f"task.pairs: the '{method}' method found no positive pair among "
                             f"{len(questions)} training questions; try another method")
    covered = len({i for p in pairs for i in p[:2]})
    report = {"method": method, "pairs": len(pairs), "questions_covered": covered,
              "training_questions": len(questions)}
    if thr is not None:
        report["threshold"] = round(thr, 4)
    return pairs, report


class PairSampler(Sampler[int]):
    """Yields the examples of a pair-ordered dataset ([a0, b0, a1, b1, ...]) two by two, pairs shuffled.

    With an even batch size every batch holds whole positive pairs, also under DDP, where accelerate
    hands whole batches to the processes. The order depends on (seed, epoch) only, so a resumed run
    sees the same batches.
    """

    def __init__(self, n_pairs: int, seed: int):
        self.n_pairs, self.seed, self.epoch = n_pairs, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * self.n_pairs

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        for p in torch.randperm(self.n_pairs, generator=g).tolist():
            yield 2 * p
            yield 2 * p + 1
