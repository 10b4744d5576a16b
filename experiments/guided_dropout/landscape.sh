#!/usr/bin/env bash
# Loss surfaces around the fine-tuned fisher_dropout model: top 5% / bottom 5% / random 5% of the weight entries
# with Fisher > 0 (run after the sweep, from the project root).
set -euo pipefail
RUN=runs/guided-dropout/fisher_dropout-data_fraction=1.0-s0
for MASK in top bottom random; do
  .venv/bin/guidetune analyze landscape $RUN --fisher runs/guided-dropout/fisher.safetensors --mask $MASK --k 5 --population nonzero \
      --dims 2 --steps 11 --range 1.0 --batches 2 --out runs/guided-dropout/landscape-$MASK
done
