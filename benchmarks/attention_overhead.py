"""Training step with attention guidance vs a plain step (default SDPA attention everywhere).

    python benchmarks/attention_overhead.py [--steps 30] [--rounds 3] [--only minilm|llama|gpt_neox]

MiniLM (BERT, hand-written recomputation from hooked q/k): 4 heads of one layer (the target, <= 1.15),
then all 12 heads of all 6 layers (reported). Batches of 16 demo sentences, length 32, negation set.

Causal LMs through transformers' attention interface (random weights, MiniLM tokenizer): a LLaMA-type
model (hidden 128, 4 layers, 8 heads / 4 key-value heads) and a 6-layer GPT-NeoX-type model (hidden 128,
8 heads), both SDPA; 4 heads of the middle layer guided toward the previous token (target <= 1.15).
"""
from __future__ import annotations

import argparse

from _common import demo_texts, header, minilm, time_trainer_steps


def _causal(kind: str):
    import torch
    from transformers import AutoModelForCausalLM

    from guidetune.testing import tiny_config

    size = dict(hidden_size=128, intermediate_size=344 if kind == "llama" else 512, num_attention_heads=8,
                num_hidden_layers=4 if kind == "llama" else 6)
    if kind == "llama":
        size["num_key_value_heads"] = 4
    torch.manual_seed(0)
    cfg = tiny_config(kind, **size)
    cfg.head_dim = 16  # derived from the overridden sizes
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    return model


def _run(label: str, model, tok, feats, params: dict, steps: int, rounds: int) -> float:
    from guidetune.config import PluginSpec, build_plugin
    from guidetune.finetune.trainer import Term
    from guidetune.regularizers import REGULARIZERS

    reg = build_plugin(REGULARIZERS, PluginSpec("attention_guidance", params))
    reg.setup(model, tok)
    t = time_trainer_steps(model, feats, [Term("attention_guidance", 0.01, reg)], steps, rounds)
    ratio = t["guided"] / t["plain"]
    print(f"{label}: plain {t['plain'] * 1000:.1f} ms, guided {t['guided'] * 1000:.1f} ms, ratio {ratio:.3f}")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["minilm", "llama", "gpt_neox"])
    a = ap.parse_args()
    texts = [t.replace(" was ", " was not ") for t in demo_texts()]
    ratios = {}
    if a.only in (None, "minilm"):
        header("attention guidance overhead vs plain step (MiniLM, SDPA)")
        model, tok = minilm()
        feats = [dict(tok(texts[i % len(texts)], padding="max_length", max_length=32, truncation=True), labels=i % 2)
                 for i in range(a.steps * 16)]
        ratios["minilm"] = _run("MiniLM, 4 heads, 1 layer", model, tok, feats,
                                {"layers": ["encoder.layers.3"], "heads": [0, 1, 2, 3]}, a.steps, a.rounds)
        if a.only is None:
            _run("MiniLM, 12 heads, 6 layers", model, tok, feats,
                 {"layers": ["encoder.layers.*"], "heads": list(range(12))}, a.steps, a.rounds)
    from guidetune.testing import tokenizer

    tok = tokenizer()
    for kind in ("llama", "gpt_neox"):
        if a.only not in (None, kind):
            continue
        header(f"attention guidance overhead vs plain step ({kind}-type causal LM, SDPA, attention interface)")
        model = _causal(kind)
        feats = []
        for i in range(a.steps * 16):
            enc = tok(texts[i % len(texts)], padding="max_length", max_length=32, truncation=True)
            enc.pop("token_type_ids", None)
            feats.append(dict(enc, labels=[t if m else -100 for t, m in zip(enc["input_ids"], enc["attention_mask"])]))
        ratios[kind] = _run(f"{kind}, 4 heads of the middle layer", model, tok, feats,
                            {"layers": ["decoder.middle"], "heads": [0, 1, 2, 3], "pattern": "previous"},
                            a.steps, a.rounds)
    print(f"ratio: {max(ratios.values()):.3f}  ({', '.join(f'{k} {v:.3f}' for k, v in ratios.items())})")


if __name__ == "__main__":
    main()
