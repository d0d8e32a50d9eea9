#!/usr/bin/env bash
# Plain vs RAM vs full fine-tuning after MIM for the deblurring expert, at one budget, on one thread;
# every step resumes after a kill and is skipped once done. Then the three on the ordinary (blur 2,
# motion) and unseen-variant (shake, Levin, plateau blur) validation tasks:
#   experiments/ood_deblur/run.sh            -> runs/ood_deblur_*/ and runs/eval/ood_deblur_{val,valu}/
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
R=.venv/bin/ramir
E=experiments/ood_deblur
P=runs/ood_deblur_pretrain
[ -f runs/ood_deblur_plain/final.safetensors ] || "$R" finetune $E/plain.yaml --no-progress
[ -f $P/final.safetensors ] || "$R" pretrain $E/pretrain.yaml --no-progress
[ -f $P/ranking_mac.json ] || "$R" mac $P/final.safetensors --config $E/pretrain.yaml \
    --per-source 10 --size 64 --steps 200 --threads 1 --quiet --out $P/ranking_mac.json
[ -f runs/ood_deblur_ram/final.safetensors ] || "$R" finetune $E/mac_finetune.yaml --no-progress
[ -f runs/ood_deblur_full/final.safetensors ] || "$R" finetune $E/full_finetune.yaml --no-progress
M=(--model plain=runs/ood_deblur_plain/final.safetensors --model ram=runs/ood_deblur_ram/final.safetensors
   --model full=runs/ood_deblur_full/final.safetensors)
"$R" evaluate --suite configs/eval/validation.yaml "${M[@]}" --baseline input --tile 0 --crops 0 \
    --select val-blur2 --select val-motion --out runs/eval/ood_deblur_val --overwrite
"$R" evaluate --suite configs/eval/validation_unseen.yaml "${M[@]}" --baseline input --tile 0 --crops 0 \
    --select valu-shake --select valu-levin --select valu-ggblur --out runs/eval/ood_deblur_valu --overwrite
