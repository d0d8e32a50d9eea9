#!/usr/bin/env bash
# One routed candidate on the validation splits (composite, unseen-variant, ordinary, and the large-photo
# stand-ins, about 30 min of the whole), one thread:
#   experiments/experts/eval_candidate.sh LABEL CKPT      -> runs/eval/{valc,valu,val,vall}_LABEL/
# Then: python experiments/experts/below_input.py runs/eval/val_LABEL ... (gains, images below input).
set -euo pipefail
cd "$(dirname "$0")/../.."
L=$1; C=$2
for s in composite:valc unseen:valu large:vall; do
  OMP_NUM_THREADS=1 .venv/bin/ramir evaluate --suite configs/eval/validation_${s%%:*}.yaml --model "$L=$C" \
      --baseline input --tile 0 --crops 0 --out "runs/eval/${s##*:}_$L" --overwrite
done
OMP_NUM_THREADS=1 .venv/bin/ramir evaluate --suite configs/eval/validation.yaml --model "$L=$C" --baseline input \
    --tile 0 --crops 0 --out "runs/eval/val_$L" --overwrite
