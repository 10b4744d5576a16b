#!/usr/bin/env bash
# Reproduces experiments/neurons/RESULTS.md (run from the project root after `make install`).
set -euo pipefail
G=.venv/bin/guidetune
$G analyze neurons minilm --layer encoder.middle.ffn.act --out runs/neurons-ft/pretrained
$G sweep experiments/neurons/sweep.yaml
$G analyze neurons minilm --compare runs/neurons-ft/lr=0.01-s0 runs/neurons-ft/lr=0.001-s0 runs/neurons-ft/lr=0.0001-s0 \
    --layer encoder.middle.ffn.act --out runs/neurons-ft/analysis
