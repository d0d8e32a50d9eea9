#!/usr/bin/env bash
# Third cycle (deblur, rain): each new expert against the shipped one on its validation tasks, then the
# routed model assembled with whichever won, against the shipped model on the whole validation split.
#   experiments/experts/eval_cycle3.sh           (from the repository root, after deblur_cycle3 / rain_cycle3)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
R=.venv/bin/ramir
V=configs/eval/validation.yaml
"$R" evaluate --suite $V --select val-blur2 --select val-motion --select val-clean \
  --model c2=runs/ckpt/deblur_c2.safetensors --model c3=runs/expert_deblur_cycle3/final.safetensors \
  --tile 0 --device cpu --crops 0 --out runs/eval/val_deblur_c3 --overwrite
"$R" evaluate --suite $V --select val-rain --select val-rainlight --select val-rain100h --select val-clean \
  --model c2=runs/ckpt/rain_c2.safetensors --model c3=runs/expert_rain_cycle3/final.safetensors \
  --tile 0 --device cpu --crops 0 --out runs/eval/val_rain_c3 --overwrite
