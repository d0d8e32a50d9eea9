#!/usr/bin/env bash
# The test-set measurements of the first default model (experiments/default_v1/MODEL_CARD.md, and
# docs/reproduction.md "A longer run"): the model against the degraded input, OpenCV non-local means and
# the same network trained by plain paired training for as many iterations, on the full test sets; then
# out-of-distribution noises. Run after experiments/default_v1/reproduce_default_model.sh, from anywhere
# (two evaluations side by side, one thread each). The model is runs/default_finetune5b/final.safetensors,
# the file that shipped as src/ramir/weights/default.safetensors until 2026-12-03.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
MODELS=(--model default=runs/default_finetune5b/final.safetensors --model plain=runs/default_plain5/final.safetensors)
ramir evaluate --suite configs/eval/default_model.yaml "${MODELS[@]}" --baseline input --baseline nlm \
    --tile 0 --crops 2 --out runs/eval/default_model --overwrite > runs/eval/default_model.log 2>&1 &
ramir evaluate --suite configs/eval/ood.yaml "${MODELS[@]}" --baseline input \
    --tile 0 --crops 0 --out runs/eval/default_model_ood --overwrite > runs/eval/default_model_ood.log 2>&1
wait
cat runs/eval/default_model/report.md runs/eval/default_model_ood/report.md
