"""Activation sparsity of chosen layers over a task split (streaming; nothing but running sums kept)."""
from __future__ import annotations

import math

import torch

from ..layers.capture import Capture

NEAR_ZERO = 0.1  # |a_i| < NEAR_ZERO * RMS(a) counts as near zero (scale-free, per token)


@torch.no_grad()
def activation_sparsity(model, task, split: str, layers: list[str], batch_size: int = 64) -> dict:
    """Per layer, over the non-padding tokens of ``split``:

    * ``near_zero``: fraction of entries with |a_i| < 0.1 * RMS(a), a = the token's activation vector;
    * ``hoyer``: normalised Hoyer measure (sqrt(d) - ||a||_1/||a||_2) / (sqrt(d) - 1), 0 = flat, 1 = one-hot;
    * ``l1_normalized``: mean ||a / ||a||_2||_1, the ``l1`` regularizer's per-token value.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = task.dataset(split)
    cap = Capture(model, layers, detach=True)
    sums = {n: [0.0, 0.0, 0.0, 0] for n in cap.names}
    for start in range(0, len(feats), batch_size):
        # model inputs only: the task's gt_* extras are for the regularizers (tasks.base.strip_extras)
        inputs = {k: v for k, v in task.collate(feats[start:start + batch_size]).items() if not k.startswith("gt_")}
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with cap as captures:
            model(**inputs)
        for name in cap.names:
            x = captures[name][captures.token_mask(name)].float()  # [tokens, dim]
            d = x.shape[-1]
            l2 = x.norm(dim=-1).clamp_min(1e-12)
            l1 = x.abs().sum(-1)
            rms = l2 / math.sqrt(d)
            s = sums[name]
            s[0] += float((x.abs() < NEAR_ZERO * rms[:, None]).float().mean(-1).sum())
            s[1] += float(((math.sqrt(d) - l1 / l2) / (math.sqrt(d) - 1)).sum())
            s[2] += float((l1 / l2).sum())
            s[3] += x.shape[0]
    model.train(was_training)
    return {n: {"near_zero": s[0] / max(s[3], 1), "hoyer": s[1] / max(s[3], 1),
                "l1_normalized": s[2] / max(s[3], 1), "tokens": s[3]} for n, s in sums.items()}
