"""``guidetune fisher``: estimate, aggregate, save and compare empirical Fisher information.

Objectives (what ``y_n`` is): ``mlm`` (15% of tokens masked, needs a pretrained masked-LM head), ``clm``
(next tokens, causal LM; labels are the input ids, padding ignored), ``seq2seq`` (target tokens), ``task``
(the label of a classification file or task: cross-entropy for classes, squared error for a regression
target such as STS-B -- the per-sample training loss in both cases). The per-sample negative
log-likelihood is summed over the sample's predicted tokens.

For the packaged MiniLM use ``task``: the sentence-transformers checkpoint ships no LM head, so an
``mlm`` estimate would measure a randomly initialised head (refused); with ``task`` the gradients come
from the downstream labels you are about to fine-tune on (through a freshly initialised classifier,
which the layer ranking of the encoder is robust to -- check with ``--reliability``).

Samples are a seeded permutation of the data cut at ``fraction`` (or ``max_samples``); smaller fractions
are prefixes of larger ones, so ``--reliability`` gets every fraction's estimate in one pass. Between two
such snapshots, batches are formed in order of length (``by_length``: less padding, the same sum). Under
``torchrun``/``accelerate launch`` the batches (the same ones one process would form) are dealt to the
processes in turn and the float64 totals are summed with ``all_reduce``, so the result equals the
one-process result up to the order of float64 additions.
"""
from __future__ import annotations

import logging
import random

import numpy as np

import torch
from tqdm.auto import tqdm

from ..errors import GuidetuneError
from ..layers.names import LayerScheme, base_of, module_paths, unwrap
from .fisher import MixedBatch, PerSampleSquaredGrads, probe
from .fisher_io import FORMAT, load, save  # noqa: F401  (re-exported: readers import them here)

log = logging.getLogger(__name__)
OBJECTIVES = {"mlm": "mlm", "clm": "causal_lm", "seq2seq": "seq2seq_lm", "task": "classification"}


def load_samples(path: str, objective: str, tok, max_length: int = 128, text_field: str = "text",
                 label_field: str = "label", report: dict | None = None) -> tuple[list[dict], list[str] | None]:
    """Tokenized samples of a data file (text lines or JSONL/CSV), and the label list for ``task``.

    Texts longer than ``max_length`` tokens are cut to it; ``report`` (a dict) receives how many samples
    were cut (``truncated_samples``, a seq2seq sample counting once) and out of how many (``samples``)."""
    from ..tasks.base import data_path, need, read_records
    from .common import read_corpus

    cut = 0

    def encode(text: str) -> dict:
        enc = dict(tok(text, truncation=True, max_length=max_length))
        # only a sample at the limit can have been cut: tokenize it again, whole, to tell
        return enc, len(enc["input_ids"]) >= max_length and len(tok(text, verbose=False)["input_ids"]) > max_length

    def done(out, labels):
        if report is not None:
            report.update({"samples": len(out), "truncated_samples": cut, "max_length": max_length})
        return out, labels

    out = []
    if objective in ("mlm", "clm"):
        for _, t, _ in read_corpus(path, text_field):
            enc, was_cut = encode(t)
            cut += was_cut
            out.append(enc)
        return done(out, None)
    p = data_path(path, "--data")
    recs = read_records(p)
    if objective == "seq2seq":
        for line, r in recs:
            enc, cut_src = encode(str(need(r, "source", p, line)))
            target, cut_tgt = encode(str(need(r, "target", p, line)))
            enc["labels"] = target["input_ids"]
            cut += cut_src or cut_tgt
            out.append(enc)
        return done(out, None)
    labels = sorted({str(need(r, label_field, p, line)) for line, r in recs})
    ids = {lab: i for i, lab in enumerate(labels)}
    for line, r in recs:
        enc, was_cut = encode(str(need(r, text_field, p, line)))
        cut += was_cut
        enc["labels"] = ids[str(r[label_field])]
        out.append(enc)
    return done(out, labels)


def task_samples(task, tok) -> list[dict]:
    """The training split's features exactly as training builds them (pairs, token types, regression)."""
    task.setup(tok)
    return [{k: v for k, v in f.items() if not k.startswith("gt_")} for f in task.dataset("train")]


def subsample_order(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(f"fisher:{seed}").shuffle(order)
    return order


def count_for(n: int, fraction: float | None, max_samples: int | None) -> int:
    if fraction is not None and not 0 < fraction <= 1:
        raise GuidetuneError(f"--fraction: must be in (0, 1], got {fraction}")
    if max_samples is not None and max_samples < 1:
        raise GuidetuneError(f"--max-samples: must be >= 1, got {max_samples}")
    if max_samples:
        return min(max_samples, n)
    return max(1, min(n, round((fraction or 1.0) * n)))


def _mask_tokens(batch: dict, tok, seed: int) -> None:
    """BERT-style: 15% of the real tokens are predicted; of those 80% [MASK], 10% random, 10% kept."""
    g = torch.Generator().manual_seed(seed)
    ids = batch["input_ids"]
    special = torch.isin(ids, torch.tensor(sorted(set(tok.all_special_ids))))
    pick = (torch.rand(ids.shape, generator=g) < 0.15) & ~special & batch["attention_mask"].bool()
    pick[:, 1] |= ~pick.any(1) & ~special[:, 1]  # every sample predicts at least one token
    batch["labels"] = torch.where(pick, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=g)
    ids = torch.where(pick & (r < 0.8), torch.full_like(ids, tok.mask_token_id), ids)
    rand = torch.randint(len(tok), ids.shape, generator=g)
    batch["input_ids"] = torch.where(pick & (r >= 0.8) & (r < 0.9), rand, ids)


def per_sample_nll(model, batch: dict, objective: str) -> torch.Tensor:
    """[batch] negative log-likelihood (training loss) of each sample's targets."""
    if objective == "clm":  # next-token targets are the input ids themselves; padding is not predicted
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100) \
            if "attention_mask" in batch else batch["input_ids"]
    else:
        labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if objective == "task":
        logits = model(**inputs).logits.float()
        if labels.is_floating_point():  # regression (STS-B): squared error, as MSELoss per sample
            return (logits.reshape(labels.shape[0], -1)[:, 0] - labels.float()).pow(2)
        return -torch.log_softmax(logits, -1).gather(1, labels[:, None])[:, 0]
    if objective == "seq2seq":
        logits = model(**inputs, labels=labels).logits.float()
    else:
        logits = model(**inputs).logits.float()
        if objective == "clm":  # position t predicts token t + 1, the last one nothing (no copy of logits[:, :-1])
            labels = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], 1)
    # Over the last dimension: a [batch, vocab, positions] view made cross_entropy copy and take a strided
    # log-softmax, twice as slow for a 30k vocabulary (the same numbers either way)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            ignore_index=-100, reduction="none")
    return nll.view(labels.shape).sum(1)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batch(tok, samples, objective, seed, start, device):
    from ..devices import to_device
    from ..tasks.base import pad_batch

    batch = pad_batch(tok, samples)
    if objective == "mlm":
        _mask_tokens(batch, tok, seed * 1000003 + start)
    return to_device(batch, device)


def check_supported(model, tok, sample: dict, objective: str, params=None) -> list[str]:
    """Refuse, before estimating, the parameters whose per-sample gradient cannot be formed (one line);
    returns those that need a batch of one (used outside their module's forward)."""
    hf = unwrap(model)
    params = params or {n: p for n, p in hf.named_parameters() if p.requires_grad}
    dev = next(hf.parameters()).device
    bad, direct = probe(hf, params, lambda: per_sample_nll(model, _batch(tok, [sample], objective, 0, 0, dev), objective))
    if bad:
        raise GuidetuneError(f"fisher: no per-sample rule for {len(bad)} parameters of this "
                             f"{getattr(hf.config, 'model_type', type(hf).__name__)} model: {', '.join(bad[:8])}"
                             + (" ..." if len(bad) > 8 else ""))
    return direct


def supported(model, objective: str | None = None) -> tuple[bool, list[str]]:
    """(every parameter has a per-sample rule, names of those without), checked on a dummy input."""
    hf = unwrap(model)
    params = dict(hf.named_parameters())
    was = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    ids = torch.arange(3, 9)[None] % max(2, getattr(hf.config, "vocab_size", 100) or 100)
    dev = next(hf.parameters()).device
    inputs = {"input_ids": ids.to(dev), "attention_mask": torch.ones_like(ids).to(dev)}
    if getattr(hf.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, :4].to(dev)
    gen = torch.Generator().manual_seed(0)

    def loss():
        out = hf(**inputs)[0].float()
        return (out * torch.randn(out.shape, generator=gen).to(dev)).sum().reshape(1)

    training = hf.training
    hf.eval()
    try:
        bad, _ = probe(hf, params, loss)
    finally:
        hf.train(training)
        for n, p in params.items():
            p.requires_grad_(was[n])
    return not bad, bad


def estimate(model, tok, samples: list[dict], objective: str, batch_size: int = 32, seed: int = 0,
             snapshots: list[int] | None = None, progress: bool = True) -> dict[int, dict[str, torch.Tensor]]:
    """Fisher estimates after the first k samples, for every k in ``snapshots`` (default: all samples).

    Runs where the model's parameters are; totals are float64 on that device. Under torch.distributed,
    every process calls this with the same samples and gets the same (all-reduced) result."""
    snapshots = sorted(set(snapshots or [len(samples)]))
    hf = unwrap(model)
    params = dict(hf.named_parameters())
    was = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    model.eval()
    dev = next(hf.parameters()).device
    rank, world = _world()
    try:
        direct = check_supported(model, tok, samples[0], objective, params)
        psg = PerSampleSquaredGrads(hf, params)
        psg.direct = {n: params[n] for n in direct}
        if direct and batch_size > 1:
            log.info("fisher: %s used outside a module call; one sample at a time", ", ".join(direct))
            batch_size = 1
        if psg.needs_single and batch_size > 1:
            log.info("fisher: T5's relative position bias is shared by the whole batch; one sample at a time")
            batch_size = 1
        if batch_size > 1 and len(samples) > 1:
            try:  # a module whose output has no batch dimension: found on a forward of two samples
                psg.batch_size = 2
                with psg, torch.no_grad():
                    per_sample_nll(model, _batch(tok, samples[:2], objective, seed, 0, dev), objective)
            except MixedBatch as e:
                log.info("fisher: %s's output has no batch dimension; one sample at a time", e)
                batch_size = 1
        return _run(model, tok, samples, objective, batch_size, seed, snapshots, progress, psg, dev, rank, world)
    finally:
        for n, p in params.items():
            p.requires_grad_(was[n])


def by_length(samples: list[dict], snapshots: list[int], objective: str) -> list[dict]:
    """The samples up to each snapshot (after the previous one) in order of length, so that a batch pads little:
    every snapshot still sums the same samples. Not for ``mlm``, whose masks are drawn per batch."""
    if objective == "mlm":
        return samples

    def size(s):
        return len(s.get("input_ids", ())), len(s["labels"]) if objective == "seq2seq" else 0

    out, start = [], 0
    for stop in snapshots:
        out += sorted(samples[start:stop], key=size)
        start = stop
    return out + samples[start:]


def _run(model, tok, samples, objective, batch_size, seed, snapshots, progress, psg, dev, rank, world):
    out, done, index = {}, 0, 0
    samples = by_length(samples, snapshots, objective)
    bar = tqdm(total=snapshots[-1], desc="fisher", unit="sample", disable=not progress or rank != 0)
    try:
        while done < snapshots[-1]:
            stop = min(done + batch_size, next(s for s in snapshots if s > done))
            mine = index % world == rank  # the batches one process would form, dealt out in turn
            index += 1
            if mine:
                _one_batch(model, tok, samples[done:stop], objective, seed, done, dev, psg)
            bar.update(stop - done)
            done = stop
            if done in snapshots:
                out[done] = {n: (t / done).float().cpu() for n, t in _reduced(psg.totals, world).items()}
    finally:
        bar.close()
    return out


def _one_batch(model, tok, samples, objective, seed, start, dev, psg):
    batch = _batch(tok, samples, objective, seed, start, dev)
    psg.batch_size = len(samples)
    with psg:
        try:
            nll = per_sample_nll(model, batch, objective)
        except MixedBatch as e:
            raise GuidetuneError(f"fisher: {e}'s output has no batch dimension for this input; use --batch-size 1") from None
        direct = list(psg.direct.values())
        grads = torch.autograd.grad(nll.sum(), psg.outputs() + direct, allow_unused=True)
        for n, g in zip(psg.direct, grads[len(grads) - len(direct):]):
            if g is not None:  # batch of one: the batch gradient is the sample's
                psg.totals[n] += g.double().square()
        psg.accumulate(len(samples))


def _reduced(totals: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    if world == 1:
        return totals
    import torch.distributed as dist

    out = {}
    for n, t in totals.items():
        s = t.clone()
        dist.all_reduce(s)
        out[n] = s
    return out


def layer_groups(model) -> dict[str, list[str]]:
    """Parameter names per transformer block (canonical ``{stack}.layers.{i}``), plus embeddings and head."""
    hf = unwrap(model)
    scheme = LayerScheme.from_model(model)
    paths = module_paths(hf)
    base = base_of(model)
    prefixes = {}
    for stack, rel in scheme.family.stacks.items():
        if stack not in scheme.counts:
            continue
        for i, block in enumerate(base.get_submodule(rel)):
            prefixes[f"{stack}.layers.{i}"] = paths[id(block)] + "."
    groups: dict[str, list[str]] = {k: [] for k in prefixes}
    groups["embeddings"], groups["other"] = [], []
    emb_ids = {id(m.weight) for m in hf.modules() if isinstance(m, torch.nn.Embedding)}
    for name, p in hf.named_parameters():
        key = next((k for k, pre in prefixes.items() if name.startswith(pre)), None)
        if key is None:
            key = "embeddings" if id(p) in emb_ids or ".embeddings." in name or name.startswith("embeddings.") else "other"
        groups[key].append(name)
    return {k: v for k, v in groups.items() if v}


def aggregates(model, fisher: dict[str, torch.Tensor]) -> dict:
    per_tensor = {n: {"mean": float(t.mean()), "sum": float(t.sum()), "numel": t.numel()} for n, t in fisher.items()}
    per_layer = {}
    for g, names in layer_groups(model).items():
        total = sum(per_tensor[n]["sum"] for n in names)
        count = sum(per_tensor[n]["numel"] for n in names)
        per_layer[g] = {"mean": total / max(count, 1), "sum": total}
    from ..regularizers.fisher_dropout import dropout_scores

    return {"per_tensor": per_tensor, "per_layer": per_layer, "per_dropout": dropout_scores(model, fisher)}


def reliability(estimates: dict[int, dict[str, torch.Tensor]], reference: int, model,
                ks=(5, 1, 0.5, 0.25)) -> list[dict]:
    """Agreement of smaller-sample estimates with the reference (seed's Table 1)."""
    from scipy.stats import spearmanr

    ref = estimates[reference]
    names = sorted(ref)
    ref_flat = torch.cat([ref[n].flatten() for n in names]).double().numpy()
    groups = [g for g in layer_groups(model) if ".layers." in g]
    ref_layers = [np.mean(np.concatenate([ref[n].flatten().numpy() for n in layer_groups(model)[g]])) for g in groups]
    rows = []
    for n_samples, est in sorted(estimates.items()):
        if n_samples == reference:
            continue
        flat = torch.cat([est[n].flatten() for n in names]).double().numpy()
        row = {"samples": n_samples, "spearman": float(spearmanr(flat, ref_flat).statistic)}
        for k in ks:
            m = max(1, int(len(flat) * k / 100))
            a = set(np.argpartition(-flat, m - 1)[:m].tolist())
            b = set(np.argpartition(-ref_flat, m - 1)[:m].tolist())
            row[f"top{k}%"] = len(a & b) / m
        lay = [np.mean(np.concatenate([est[n].flatten().numpy() for n in layer_groups(model)[g]])) for g in groups]
        row["layer_rank_spearman"] = float(spearmanr(lay, ref_layers).statistic)
        rows.append(row)
    return rows
