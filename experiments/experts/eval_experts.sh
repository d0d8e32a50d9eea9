#!/usr/bin/env bash
# RAM against plain, expert by expert: each expert's two checkpoints on its own validation tasks.
#   experiments/experts/eval_experts.sh [noise deblur jpeg rain tone]     (from the repository root)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R=.venv/bin/ramir
declare -A TASKS=(
  [noise]="val-noise15 val-noise25 val-noise50 val-clean"
  [deblur]="val-blur2 val-motion val-clean"
  [jpeg]="val-jpeg20 val-jpeg50 val-clean"
  [rain]="val-rain val-rain100h val-clean"
  [tone]="val-haze val-lowlight val-clean"
)
for x in ${@:-noise deblur jpeg rain tone}; do
  sel=(); for t in ${TASKS[$x]}; do sel+=(--select "$t"); done
  "$R" evaluate --suite configs/eval/validation.yaml "${sel[@]}" --baseline input \
    --model "ram=runs/expert_${x}_finetune/final.safetensors" --model "plain=runs/expert_${x}_plain/final.safetensors" \
    --tile 0 --device cpu --crops 0 --out "runs/eval/val_expert_$x" --overwrite
done
