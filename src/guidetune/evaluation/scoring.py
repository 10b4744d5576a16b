"""Token-level scoring for causal and seq2seq LMs: summed log-probability of continuations.

One place owns this work (as in lm-evaluation-harness): yes/no answering of BeliefBank questions and
multiple-choice evaluation both call :func:`option_logprobs`.

For a causal LM each item's prompt is encoded **once**: a forward pass over the prompt yields its
key/value cache, which is then expanded to the item's options so that only the option tokens are run
again (batched over options). For a seq2seq LM the encoder runs once per item and the decoder scores
all options of the item in one batch.

Truncation policy (shared with training on multiple-choice items, :func:`fit_prompt`):

* the limit is the task's ``max_length`` clamped to the model's real maximum number of positions,
  read from its config (:func:`max_positions`: ``n_positions``, ``max_position_embeddings``, ...);
* a prompt that does not fit keeps its **end** (the question and "Answer:" of a few-shot prompt),
  and the special tokens the tokenizer puts around it (BOS, [CLS]/[SEP]);
* causal LM: prompt + the item's longest option must fit, so every option of an item is scored after
  the same prompt tokens; seq2seq: the prompt must fit the encoder and each option the decoder;
* an option that does not fit on its own (with one prompt token before it) is a one-line error;
* how many items were cut, and by how many tokens, is counted in ``report`` (and so in results.json).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import GuidetuneError

_POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length",
                  "max_seq_len")
_PAD_OFFSET = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod"}  # positions start at pad+1


def max_positions(model) -> int | None:
    """The most positions the model can embed (None when it has no fixed limit, e.g. T5's relative bias).

    Read from the config; RoBERTa-style models lose ``pad_token_id + 1`` positions to their offset.
    """
    cfg = model.config
    if getattr(cfg, "model_type", "") in ("t5", "mt5", "umt5", "longt5"):
        return None  # relative position buckets: no hard limit (n_positions is only a default)
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    for key in _POSITION_KEYS:
        n = getattr(text, key, None)
        if isinstance(n, int) and n > 0:
            if getattr(cfg, "model_type", "") in _PAD_OFFSET:
                n -= (getattr(cfg, "pad_token_id", 1) or 1) + 1
            return n
    return None


def effective_limit(model, max_length: int | None) -> int | None:
    """``max_length`` clamped to :func:`max_positions` (either may be None: no limit from that side)."""
    limits = [n for n in (max_length, max_positions(model)) if n]
    return min(limits) if limits else None


def split_special(tok, text: str) -> tuple[list[int], list[int], list[int]]:
    """(special tokens before, content tokens, special tokens after) of ``tok(text)``."""
    full = tok(text)["input_ids"]
    content = tok(text, add_special_tokens=False)["input_ids"]
    extra = len(full) - len(content)
    for pre in range(max(extra, 0) + 1):
        if full[pre:pre + len(content)] == content:
            return full[:pre], content, full[pre + len(content):]
    return [], full, []  # the tokenizer changes the content with specials on: treat all as content


def fit_prompt(tok, prompt: str, budget: int | None) -> tuple[list[int], int]:
    """(prompt ids with at most ``budget`` tokens, keeping the end and the specials, number of tokens cut)."""
    pre, content, post = split_special(tok, prompt)
    if budget is None or len(pre) + len(content) + len(post) <= budget:
        return pre + content + post, 0
    keep = max(budget - len(pre) - len(post), 0)
    return pre + (content[len(content) - keep:] if keep else []) + post, len(content) - keep


def _cont_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def option_logprobs(model, tokenizer, prompts: Sequence[str], options: Sequence[Sequence[str]], kind: str,
                    max_length: int | None = 512, batch_items: int = 16, report: dict | None = None,
                    where: Callable[[int], str] | None = None) -> list[list[tuple[float, int]]]:
    """For every item, ``(sum of log p(option tokens | prompt), number of option tokens)`` per option.

    ``kind`` is ``causal_lm`` or ``seq2seq_lm``. Items are processed in length-sorted groups of up to
    ``batch_items`` prompts; results come back in input order. Prompts are truncated as the module
    docstring says; ``report`` (a dict) receives ``limit``, ``truncated_items`` and ``truncated_tokens``,
    and ``cut`` (tokens cut per item); ``where(i)`` names item ``i`` in errors (``file:line``).
    """
    limit = effective_limit(model, max_length)
    encoded = [_encode_item(tokenizer, p, o, kind, limit, where(i) if where else f"item {i}")
               for i, (p, o) in enumerate(zip(prompts, options))]
    if report is not None:
        cut = [e[2] for e in encoded]
        report.update({"limit": limit, "truncated_items": sum(c > 0 for c in cut), "truncated_tokens": sum(cut),
                       "cut": cut})
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i][0]))
    out: list = [None] * len(prompts)
    fn = _causal_group if kind == "causal_lm" else _seq2seq_group
    for start in range(0, len(order), batch_items):
        idx = order[start:start + batch_items]
        for i, scores in zip(idx, fn(model, tokenizer, [encoded[i] for i in idx], limit)):
            out[i] = scores
    model.train(was_training)
    return out


def _encode_item(tok, prompt: str, opts: Sequence[str], kind: str, limit: int | None, where: str):
    """(prompt ids, option ids, tokens cut from the prompt) under the truncation policy."""
    if kind == "causal_lm":
        conts = [_cont_ids(tok, o) for o in opts]
        longest = max(len(c) for c in conts)
        budget = None if limit is None else limit - longest
        if budget is not None and budget < 1:
            j = max(range(len(conts)), key=lambda k: len(conts[k]))
            raise GuidetuneError(f"{where}: option {j} is {longest} tokens; with one prompt token it does not fit "
                                 f"the model's {limit} positions")
    else:
        conts = [tok(o)["input_ids"] for o in opts]
        longest = max(len(c) for c in conts)
        if limit is not None and longest > limit:
            j = max(range(len(conts)), key=lambda k: len(conts[k]))
            raise GuidetuneError(f"{where}: option {j} is {longest} tokens, more than the model's {limit} positions")
        budget = limit
    ids, cut = fit_prompt(tok, prompt, budget)
    return ids, conts, cut


def _causal_group(model, tok, items, limit):
    """Prompts once (left-padded, KV cache kept), then all options of all prompts in one batch."""
    dev = _device(model)
    p_ids = [it[0] for it in items]
    plen = [len(p) for p in p_ids]
    width = max(plen)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # Left-pad prompts so every prompt ends at the same position and the cache lines up.
    ids = torch.tensor([[pad] * (width - n) + p for p, n in zip(p_ids, plen)], device=dev)
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in plen], device=dev)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}  # only the last position's logits
    first = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
    if getattr(first, "past_key_values", None) is None:
        # BERT-like encoders load under AutoModelForCausalLM but attend both ways and keep no cache:
        # their "log-likelihood" of an option would let the option see itself.
        mt = getattr(model.config, "model_type", type(model).__name__)
        raise GuidetuneError(f"multiple choice: the '{mt}' model is not a causal language model here (it keeps no KV "
                             "cache and attends both ways); score options with a causal_lm or seq2seq_lm model")
    last_logp = torch.log_softmax(first.logits[:, -1].float(), -1)  # [items, vocab]: after each prompt
    rows, conts = [], []
    for i, it in enumerate(items):
        for c in it[1]:
            rows.append(i)
            conts.append(c)
    cwidth = max(len(c) for c in conts)
    row_t = torch.tensor(rows, device=dev)
    cache = _select_cache(first.past_key_values, row_t)
    c_ids = torch.tensor([c + [pad] * (cwidth - len(c)) for c in conts], device=dev)
    c_mask = torch.tensor([[1] * len(c) + [0] * (cwidth - len(c)) for c in conts], device=dev)
    full_mask = torch.cat([mask[row_t], c_mask], dim=1)
    c_pos = pos[row_t, -1:] + 1 + torch.arange(cwidth, device=dev)[None]
    if limit is not None:  # padding positions past the limit are masked; keep their index in range
        c_pos = c_pos.clamp_max(limit - 1)
    logits = model(input_ids=c_ids, attention_mask=full_mask, position_ids=c_pos, past_key_values=cache).logits
    logits = logits.float()  # [options, cwidth, vocab]
    first_lp = last_logp[row_t].gather(1, c_ids[:, :1])[:, 0]  # [options]
    if cwidth > 1:
        nxt = c_ids[:, 1:, None]
        rest = (logits[:, :-1].gather(-1, nxt)[..., 0] - logits[:, :-1].logsumexp(-1)) * c_mask[:, 1:]
        totals = (first_lp + rest.sum(1)).tolist()
    else:
        totals = first_lp.tolist()
    result: list[list[tuple[float, int]]] = [[] for _ in items]
    for r, (i, c) in enumerate(zip(rows, conts)):
        result[i].append((totals[r], len(c)))
    return result


def _accepts(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def _select_cache(cache, rows: torch.Tensor):
    """The cache with its batch rows gathered by ``rows`` (one row per option)."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)
        return cache
    return tuple(tuple(t.index_select(0, rows) for t in layer) for layer in cache)


def _seq2seq_group(model, tok, items, limit):
    dev = _device(model)
    enc = tok.pad([{"input_ids": it[0]} for it in items], return_tensors="pt").to(dev)
    encoder_out = model.get_encoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    rows, targets = [], []
    for i, it in enumerate(items):
        for t in it[1]:
            rows.append(i)
            targets.append(t)
    width = max(len(t) for t in targets)
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets], device=dev)
    row_t = torch.tensor(rows, device=dev)
    hidden = encoder_out.last_hidden_state.index_select(0, row_t)
    logits = model(encoder_outputs=(hidden,), attention_mask=enc["attention_mask"][row_t], labels=labels).logits
    logp = torch.log_softmax(logits.float(), -1)
    gathered = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100)
    sums = gathered.sum(1).tolist()
    result: list[list[tuple[float, int]]] = [[] for _ in items]
    for r, i in enumerate(rows):
        result[i].append((sums[r], len(targets[r])))
    return result
