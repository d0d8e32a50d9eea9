#!/usr/bin/env bash
# Fourth cycle (rain on another renderer's streaks): the new rain expert against the shipped one on its
# validation tasks; routed models with it and a prior towards the rain class (--class-bias rain=B, B in
# 0, 0.5, 1) on the tasks whose routing the prior changes; then the chosen one on the whole split.
#   experiments/experts/eval_cycle4.sh           (from the repository root, after rain_cycle4)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
R=.venv/bin/ramir
V=configs/eval/validation.yaml
E="--expert noise=runs/ckpt/noise_c2.safetensors --expert deblur=runs/expert_deblur_cycle3/final.safetensors
   --expert jpeg=runs/ckpt/jpeg_c2.safetensors --expert rain=runs/expert_rain_cycle4/final.safetensors
   --expert tone=runs/ckpt/tone_c2.safetensors"
"$R" evaluate --suite $V --select val-rain --select val-rainlight --select val-rain100h --select val-raintransfer \
  --select val-clean --baseline input --model c2=runs/ckpt/rain_c2.safetensors \
  --model c4=runs/expert_rain_cycle4/final.safetensors --tile 0 --device cpu --crops 0 \
  --out runs/eval/val_rain_c4 --overwrite
models=()
for b in 0 0.5 1; do
  # shellcheck disable=SC2086
  .venv/bin/python experiments/experts/build_routed.py --chain plain --router runs/router_p192/router.pt $E \
    --keep-threshold 0.8 --class-bias rain=$b --out runs/routed_c4_b$b.safetensors
  models+=(--model "b$b=runs/routed_c4_b$b.safetensors")
done
"$R" evaluate --suite $V --select val-raintransfer --select val-rainlight --select val-clean --select val-motion \
  --select val-blur2 --select val-haze "${models[@]}" --tile 0 --device cpu --crops 0 \
  --out runs/eval/val_c4_bias --overwrite
