#!/usr/bin/env bash
# From the project root: a from-scratch tiny GPT-2 (MiniLM tokenizer), trained with attention guidance.
set -euo pipefail
.venv/bin/python -c "from guidetune.testing import save_tiny; save_tiny('gpt2', 'runs/attention-guidance-gpt2/tiny-gpt2', n_embd=64, n_layer=4, n_head=4)"
rm -rf runs/attention-guidance-gpt2/tiny-gpt2-guided
.venv/bin/guidetune train experiments/attention_guidance/gpt2_pipeline/config.yaml
.venv/bin/guidetune analyze attention runs/attention-guidance-gpt2/tiny-gpt2 runs/attention-guidance-gpt2/tiny-gpt2-guided \
    --corpus experiments/attention_guidance/gpt2_pipeline/negation_sentences.txt --out runs/attention-guidance-gpt2/analysis
