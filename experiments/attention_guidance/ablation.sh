#!/usr/bin/env bash
# Guided-head ablation and item-level significance for the attention-guidance runs (issue 15 point 4).
# Run from anywhere; everything is written under runs/ (git-ignored). Resumable: a finished sweep run or
# ablation output (its manifest.json) is skipped. Results and reading: RESULTS.md ("Guided-head ablation").
#   bash experiments/attention_guidance/ablation.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
GT=.venv/bin/guidetune
PY=.venv/bin/python
E=experiments/attention_guidance
R=runs/attention-guidance-ablation      # the sweep's runs
A=runs/attention-guidance-ablation-analysis
DRAWS=${DRAWS:-20}
mkdir -p "$A"

# 1. Train: no guidance vs heads 0-2 guided, seeds 0 and 1 (about 5 min a run on one core).
$GT sweep $E/sweep_ablation.yaml

# 2. Attention mass on negation words, before (pretrained MiniLM) and after fine-tuning.
[ -f "$A/mass.md" ] || $PY $E/report.py --runs $R | tee "$A/mass.md"

# 3. Reference corpus for --method mean: the 5,000 training questions (half negated), written to runs/.
[ -f "$A/train_questions.txt" ] || $PY - "$A/train_questions.txt" <<'PY'
import sys
from guidetune.analysis.common import load_any
from guidetune.config import load_config, build_plugin
from guidetune.tasks import TASKS
_, _, tok = load_any("minilm")
t = build_plugin(TASKS, load_config("experiments/attention_guidance/base.yaml").task)
t.setup(tok)
open(sys.argv[1], "w").write("\n".join(q.text for q in t.questions("train")) + "\n")
PY

# 4. Ablate heads 0-2 of every layer (zero, mean) against DRAWS draws of 3 random other heads per layer,
#    on the 1,326 test questions (ablation_task.yaml: base.yaml's task, multi-hop consistency off,
#    constraint consistency over the test facts). Guided runs: the heads named by their own guidance
#    terms; unguided runs: the same heads by name (the control that the heads matter only after guidance).
HEADS="encoder.layers.0.attn:0,1,2;encoder.layers.1.attn:0,1,2;encoder.layers.2.attn:0,1,2;encoder.layers.3.attn:0,1,2;encoder.layers.4.attn:0,1,2;encoder.layers.5.attn:0,1,2"
for s in 0 1; do
  for v in heads0-2-negation no-guidance; do
    units=$([ $v = heads0-2-negation ] && echo "@$R/$v-s$s:guided" || echo "$HEADS")
    for m in zero mean; do
      out=$A/ablate-$v-s$s-$m
      [ -f "$out/manifest.json" ] && continue
      ref=$([ $m = mean ] && echo "--reference $A/train_questions.txt" || true)
      t0=$SECONDS
      $GT analyze ablate $R/$v-s$s --units "$units" \
        --task $E/ablation_task.yaml --method $m --draws "$DRAWS" $ref --out "$out"
      echo "ablate $v-s$s $m: $((SECONDS - t0)) s"
    done
  done
done

# 5. Guided vs unguided: paired bootstrap over the test items and across seeds, Holm; both seeds
#    together (seed permutation test) and each seed on its own (item bootstrap p-value).
[ -f "$A/compare/compare.md" ] || $GT compare $R/heads0-2-negation-s0 $R/heads0-2-negation-s1 \
  --vs $R/no-guidance-s0 $R/no-guidance-s1 --out "$A/compare"
for s in 0 1; do
  [ -f "$A/compare-s$s/compare.md" ] || $GT compare $R/heads0-2-negation-s$s --vs $R/no-guidance-s$s --out "$A/compare-s$s"
done

# 6. What the ablations do to the answers ("yes" shares and flips per phrasing), about 2 min.
if [ ! -f "$A/answers.md" ]; then
  $PY $E/ablation_answers.py heads0-2-negation-s0 heads0-2-negation-s1 no-guidance-s0 no-guidance-s1 > "$A/answers.md.tmp"
  mv "$A/answers.md.tmp" "$A/answers.md"
fi
