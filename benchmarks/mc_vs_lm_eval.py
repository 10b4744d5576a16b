"""Multiple-choice log-likelihoods: guidetune's scorer vs lm-evaluation-harness's HF backend.

Both score the same items with the same model, saved to a temporary directory: a randomly initialised
6-layer GPT-2 (d=256) with a byte-level BPE tokenizer trained here on the packaged corpus (no
download). 64 items x 4 options; prompts are ~60-token multi-line Inverse-Scaling-style questions
("Question: ...\\nA. ...\\nB. ...\\nAnswer:"), options are multi-token continuations.

* guidetune: :func:`guidetune.evaluation.scoring.option_logprobs` (prompt encoded once, its KV cache
  reused for the options);
* lm-eval: ``HFLM(pretrained=DIR).loglikelihood`` on (prompt, option) requests (every request runs
  prompt + option; its one-token logits cache does not apply to multi-token options), 64 sequences
  a batch (faster than 16 here).

Checks: max |difference| of the per-option log-likelihoods <= 1e-4, and items/s ratio >= 1.5.

    pip install -e '.[bench]' && python benchmarks/mc_vs_lm_eval.py [--items 64]

The last line is ``ratio: X`` = guidetune items/s / lm-eval items/s.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import header

SUBJECTS = ["wood", "steel", "glass", "water", "ice", "a whale", "a penguin", "the moon", "a river", "copper",
            "a violin", "sand", "an eagle", "a bicycle", "paper", "a cactus"]
PROPS = ["is not a metal", "never flies", "does not float", "is not alive", "cannot melt", "is not a fish",
         "never sings", "is not transparent"]


def items(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    prompts, options = [], []
    for i in range(n):
        opts = rng.sample(SUBJECTS, 4)
        lines = [f"Question {i}: Which of the following {rng.choice(PROPS)}, as far as anybody here can tell, "
                 f"when you think about it carefully and do not guess?"]
        lines += [f"{'ABCD'[k]}. {o}, which {rng.choice(PROPS)}" for k, o in enumerate(opts)]
        prompts.append("\n".join(lines) + "\nAnswer:")
        options.append([f" {o} (option {'ABCD'[k]})" for k, o in enumerate(opts)])
    return prompts, options


def build(dirpath: Path, texts: list[str]):
    """A random 6-layer GPT-2 and a byte-level BPE tokenizer trained on ``texts``, saved to ``dirpath``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=1200, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=6, n_embd=256, n_head=4, n_positions=1024,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(dirpath)
    tok.save_pretrained(dirpath)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        sys.exit("lm-eval is not installed: pip install -e '.[bench]'")
    from importlib import resources

    from guidetune.config import ModelSpec
    from guidetune.evaluation.scoring import option_logprobs
    from guidetune.models import load_model

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    header("multiple choice: guidetune's scorer vs lm-evaluation-harness HFLM.loglikelihood (6-layer random GPT-2)")
    prompts, options = items(a.items)
    corpus = (resources.files("guidetune") / "data" / "corpus" / "topics.txt").read_text().splitlines()
    with tempfile.TemporaryDirectory() as d:
        build(Path(d), corpus + prompts + [o for opts in options for o in opts])
        model, tok = load_model(ModelSpec(name=d, head="causal_lm"))
        model.eval()
        lm = HFLM(pretrained=d, batch_size=64, device="cpu")
        requests = [Instance(request_type="loglikelihood", doc={}, arguments=(p, o), idx=j)
                    for i, (p, opts) in enumerate(zip(prompts, options)) for j, o in enumerate(opts)]

        def ours():
            return [s for item in option_logprobs(model, tok, prompts, options, "causal_lm", batch_items=16)
                    for s, _ in item]

        def theirs():
            return [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]

        ref = theirs()
        got = ours()
        diff = max(abs(x - y) for x, y in zip(got, ref))
        times: dict[str, list[float]] = {"guidetune": [], "lm-eval": []}
        for _ in range(a.rounds):  # interleaved rounds: drift on a shared machine hits all equally
            for name, fn in (("guidetune", ours), ("lm-eval", theirs)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        lengths = [len(tok(p)["input_ids"]) for p in prompts]
        opt_len = [len(tok(o, add_special_tokens=False)["input_ids"]) for opts in options for o in opts]
        print(f"{a.items} items x 4 options; prompt tokens {min(lengths)}-{max(lengths)} "
              f"(mean {sum(lengths) / len(lengths):.0f}), option tokens {min(opt_len)}-{max(opt_len)}; "
              f"torch threads {torch.get_num_threads()}")
        print(f"max |log-likelihood difference| over {len(got)} options: {diff:.2e} (limit 1e-4)")
        for k, v in best.items():
            print(f"{k:>9}: {v:.3f} s  ({a.items / v:.1f} items/s, best of {a.rounds})")
        ratio = best["lm-eval"] / best["guidetune"]
        if diff > 1e-4:
            sys.exit(f"FAIL: log-likelihoods differ by {diff:.2e}")
        print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
