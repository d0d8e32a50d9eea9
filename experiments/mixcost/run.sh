#!/usr/bin/env bash
# Train the named study recipes one after another on one thread, then score each on the validation split.
#   experiments/mixcost/run.sh mix9_plain noise_only        (from the repository root; resumes after a kill)
set -euo pipefail
export OMP_NUM_THREADS=1
R=.venv/bin/ramir
for recipe in "$@"; do
  name=mixcost_$recipe
  "$R" finetune "experiments/mixcost/$recipe.yaml" --no-progress
  if [ ! -f "runs/eval/val_$name/report.md" ]; then
    "$R" evaluate --suite configs/eval/validation.yaml --model "$recipe=runs/$name/final.safetensors" \
      --tile 0 --device cpu --out "runs/eval/val_$name" --overwrite
  fi
done
