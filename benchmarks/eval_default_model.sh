#!/usr/bin/env bash
# The measurements of docs/default-model.md: the shipped model against the degraded input, OpenCV
# non-local means and the same network trained by plain paired training for as many iterations, on the
# full test sets; then out-of-distribution noises. Run from the repository root after
# benchmarks/reproduce_default_model.sh (two evaluations side by side, one thread each).
set -euo pipefail
export OMP_NUM_THREADS=1
MODELS=(--model default=src/ramir/weights/default.safetensors --model plain=runs/default_plain5/final.safetensors)
ramir evaluate --suite configs/eval/default_model.yaml "${MODELS[@]}" --baseline input --baseline nlm \
    --tile 0 --crops 2 --out runs/eval/default_model --overwrite > runs/eval/default_model.log 2>&1 &
ramir evaluate --suite configs/eval/ood.yaml "${MODELS[@]}" --baseline input \
    --tile 0 --crops 0 --out runs/eval/default_model_ood --overwrite > runs/eval/default_model_ood.log 2>&1
wait
cat runs/eval/default_model/report.md runs/eval/default_model_ood/report.md
