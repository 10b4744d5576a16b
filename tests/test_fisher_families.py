"""Fisher right for every parameter of every model family: the batched per-sample estimate equals a float64
one-sample autograd loop (a float64 copy of the model) within 1e-4 relative, on every type that
``guidetune.testing`` builds, plus T5 v1.1 (untied ``shared`` embedding used by encoder and decoder)."""
import copy

import pytest
import torch

from guidetune.analysis.fisher_estimate import estimate, per_sample_nll, supported
from guidetune.tasks.base import pad_batch
from guidetune.testing import MODEL_TYPES, default_head, tiny_model

TEXTS = ["the cat sat on the mat", "a dog", "never say never again please", "birds fly south",
         "one two three four five six seven"]
OBJECTIVE = {"classification": "task", "causal_lm": "clm", "seq2seq_lm": "seq2seq"}
CASES = [(t, {}) for t in MODEL_TYPES] + [("t5", {"tie_word_embeddings": False, "feed_forward_proj": "gated-gelu"})]
IDS = [t for t in MODEL_TYPES] + ["t5-v1.1-untied"]


def samples_for(model, tok, objective):
    import inspect

    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    out = []
    for i, t in enumerate(TEXTS):
        e = dict(tok(t))
        if not takes_types:
            e.pop("token_type_ids", None)
        if objective == "task":
            e["labels"] = i % 2
        elif objective == "seq2seq":
            e["labels"] = tok(TEXTS[(i + 1) % 5] + " the")["input_ids"]  # shares tokens with the source
        out.append(e)
    return out


def reference(model, tok, samples, objective):
    """float64 copy of the model, one sample at a time, torch.autograd.grad, square, accumulate."""
    ref = copy.deepcopy(model).double().eval()
    params = dict(ref.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in samples:
        nll = per_sample_nll(ref, pad_batch(tok, [s]), objective)
        for n, g in zip(params, torch.autograd.grad(nll.sum(), list(params.values()), allow_unused=True)):
            if g is not None:
                total[n] += g ** 2
    return {n: t / len(samples) for n, t in total.items()}


def assert_equal(got, ref, tol=1e-4):
    assert set(got) == set(ref)  # tied weights appear once
    # Relative error; values below 1e-6 of the largest are compared as 0 (exactly-zero gradients such as
    # attention key biases' come out as float32 rounding noise).
    floor = 1e-6 * max(float(v.max()) for v in ref.values())
    worst = max(((n, float(((got[n].double() - ref[n]).abs() / ref[n].abs().clamp_min(floor)).max())) for n in ref),
                key=lambda x: x[1])
    assert worst[1] < tol, worst


@pytest.mark.parametrize("kind,overrides", CASES, ids=IDS)
def test_batched_fisher_equals_float64_one_sample_loop(tok, kind, overrides):
    model = tiny_model(kind, **overrides).eval()
    objective = OBJECTIVE[default_head(kind)]
    samples = samples_for(model, tok, objective)
    got = estimate(model, tok, samples, objective, batch_size=3, progress=False)[5]
    assert_equal(got, reference(model, tok, samples, objective))


@pytest.mark.parametrize("kind", MODEL_TYPES)
def test_supported_reports_every_family(kind):
    ok, bad = supported(tiny_model(kind))
    assert ok and bad == []
