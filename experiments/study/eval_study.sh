#!/usr/bin/env bash
# Evaluate one run of the reproduction study (docs/reproduction.md) on the in-distribution and
# out-of-distribution suites, 12 images per task; run from anywhere:
#   experiments/study/eval_study.sh LABEL CHECKPOINT
# The degraded inputs themselves, on the same images:   experiments/study/eval_study.sh input
# SUITES (optional third argument, default "default_model ood") limits the suites. Writes
# runs/eval/study_<LABEL>_<suite>/; experiments/study/reproduction_table.py collects them into the tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # two evaluations were run side by side on 2 cores
for suite in ${3:-default_model ood}; do
  if [ "$1" = input ]; then what=(--baseline input); else what=(--model "$1=$2"); fi
  ramir evaluate --suite configs/eval/$suite.yaml "${what[@]}" --max-images 12 --crops 0 --tile 0 \
      --out "runs/eval/study_$1_$suite" --overwrite
done
