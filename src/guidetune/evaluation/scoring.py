"""Token-level scoring for causal and seq2seq LMs: summed log-probability of continuations.

One place owns this work (as in lm-evaluation-harness): yes/no answering of BeliefBank questions and
multiple-choice evaluation both call :func:`option_logprobs`.

For a causal LM each item's prompt is encoded **once**: a forward pass over the prompt yields its
key/value cache, which is then expanded to the item's options so that only the option tokens are run
again (batched over options). For a seq2seq LM the encoder runs once per item and the decoder scores
all options of the item in one batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _cont_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def option_logprobs(model, tokenizer, prompts: Sequence[str], options: Sequence[Sequence[str]], kind: str,
                    max_length: int = 512, batch_items: int = 16) -> list[list[tuple[float, int]]]:
    """For every item, ``(sum of log p(option tokens | prompt), number of option tokens)`` per option.

    ``kind`` is ``causal_lm`` or ``seq2seq_lm``. Items are processed in length-sorted groups of up to
    ``batch_items`` prompts; results come back in input order.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list = [None] * len(prompts)
    for start in range(0, len(order), batch_items):
        idx = order[start:start + batch_items]
        fn = _causal_group if kind == "causal_lm" else _seq2seq_group
        for i, scores in zip(idx, fn(model, tokenizer, [prompts[i] for i in idx], [options[i] for i in idx], max_length)):
            out[i] = scores
    model.train(was_training)
    return out


def _causal_group(model, tok, prompts, options, max_length):
    """Prompts once (right-padded, KV cache kept), then all options of all prompts in one batch."""
    dev = _device(model)
    p_ids = [tok(p, add_special_tokens=True)["input_ids"][: max_length - 8] for p in prompts]
    plen = [len(p) for p in p_ids]
    width = max(plen)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # Left-pad prompts so every prompt ends at the same position and the cache lines up.
    ids = torch.tensor([[pad] * (width - n) + p for p, n in zip(p_ids, plen)], device=dev)
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in plen], device=dev)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    first = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    last_logp = torch.log_softmax(first.logits[:, -1].float(), -1)  # next-token distribution after each prompt
    rows, conts = [], []
    for i, opts in enumerate(options):
        for o in opts:
            rows.append(i)
            conts.append(_cont_ids(tok, o))
    cwidth = max(len(c) for c in conts)
    row_t = torch.tensor(rows, device=dev)
    cache = _select_cache(first.past_key_values, row_t)
    c_ids = torch.tensor([c + [pad] * (cwidth - len(c)) for c in conts], device=dev)
    c_mask = torch.tensor([[1] * len(c) + [0] * (cwidth - len(c)) for c in conts], device=dev)
    full_mask = torch.cat([mask[row_t], c_mask], dim=1)
    c_pos = pos[row_t, -1:] + 1 + torch.arange(cwidth, device=dev)[None]
    logits = model(input_ids=c_ids, attention_mask=full_mask, position_ids=c_pos, past_key_values=cache).logits
    logp = torch.log_softmax(logits.float(), -1)  # [options, cwidth, vocab]
    result: list[list[tuple[float, int]]] = [[] for _ in prompts]
    for r, (i, c) in enumerate(zip(rows, conts)):
        total = float(last_logp[i, c[0]])
        for j in range(1, len(c)):
            total += float(logp[r, j - 1, c[j]])
        result[i].append((total, len(c)))
    return result


def _select_cache(cache, rows: torch.Tensor):
    """The cache with its batch rows gathered by ``rows`` (one row per option)."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)
        return cache
    return tuple(tuple(t.index_select(0, rows) for t in layer) for layer in cache)


def _seq2seq_group(model, tok, prompts, options, max_length):
    dev = _device(model)
    enc = tok(list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=max_length).to(dev)
    encoder_out = model.get_encoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    rows, targets = [], []
    for i, opts in enumerate(options):
        for o in opts:
            rows.append(i)
            targets.append(tok(o, add_special_tokens=True)["input_ids"])
    width = max(len(t) for t in targets)
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets], device=dev)
    row_t = torch.tensor(rows, device=dev)
    hidden = encoder_out.last_hidden_state.index_select(0, row_t)
    logits = model(encoder_outputs=(hidden,), attention_mask=enc["attention_mask"][row_t], labels=labels).logits
    logp = torch.log_softmax(logits.float(), -1)
    gathered = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100)
    result: list[list[tuple[float, int]]] = [[] for _ in prompts]
    for r, i in enumerate(rows):
        result[i].append((float(gathered[r].sum()), len(targets[r])))
    return result
