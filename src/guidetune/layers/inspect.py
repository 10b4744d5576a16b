"""``guidetune ls layers MODEL``: every canonical name with its module path and shape."""
from __future__ import annotations

import torch

from .capture import Capture
from .names import LayerScheme, module_paths


def _symbolic(shape: tuple[int, ...], batch: int, seq: dict[int, str]) -> str:
    dims = []
    for i, d in enumerate(shape):
        if i == 0 and d == batch:
            dims.append("batch")
        elif d in seq:
            dims.append(seq[d])
        else:
            dims.append(str(d))
    return "[" + ", ".join(dims) + "]"


@torch.no_grad()
def layer_table(model, tokenizer=None) -> list[tuple[str, str, str]]:
    """(canonical name, module path in ``model``, shape) for every canonical name of ``model``.

    Shapes come from one dummy forward pass (batch 2, source length 7, target length 5)."""
    scheme = LayerScheme.from_model(model)
    names = scheme.names()
    batch, src, tgt = 2, 7, 5
    ids = torch.full((batch, src), 1000, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if scheme.family.encoder_decoder and "decoder" in scheme.counts:
        inputs["decoder_input_ids"] = torch.zeros((batch, tgt), dtype=torch.long)
    was_training = model.training
    model.eval()
    cap = Capture(model, names, detach=True)
    with cap as captures:
        model(**inputs)
    model.train(was_training)
    paths = module_paths(model)
    rows = []
    for r in cap.resolved:
        if r.name not in captures:
            continue
        seq = {src: "seq"} if not captures.seq2seq_decoder(r.name) else {tgt: "seq"}
        if r.site == "cross_attn.probs":
            seq = {tgt: "query", src: "key"}
        elif r.site.endswith("probs"):
            seq = {list(seq)[0]: "query"}
            shape = tuple(captures[r.name].shape)
            dims = ["batch", str(shape[1]), "query", "key"]
            rows.append((r.name, paths.get(id(r.module), "?"), "[" + ", ".join(dims) + "]"))
            continue
        shape = tuple(captures[r.name].shape)
        if r.expert is not None:  # MoE: only the tokens routed to this expert
            text = f"[routed tokens, {shape[-1]}]"
        elif r.site == "ffn.router":
            text = f"[batch * seq, {shape[-1]}]"
        else:
            text = _symbolic(shape, batch, seq)
        path = paths.get(id(r.module), "?") + (f" (call {r.call})" if r.call is not None else "")  # shared layer
        rows.append((r.name, path, text))
    return rows
