#!/usr/bin/env bash
# Train every expert of the routed default model with one method, one after another on one thread:
#   experiments/experts/run_chain.sh plain        # plain paired training, 6,000 iterations each
#   experiments/experts/run_chain.sh ram          # RAM: pre-training 3,600 + MAC + fine-tuning 2,400
# Run from the repository root; every step resumes after a kill and is skipped once done.
set -euo pipefail
export OMP_NUM_THREADS=1
R=.venv/bin/ramir
E=experiments/experts
for x in ${EXPERTS:-noise deblur jpeg rain tone}; do
  if [ "$1" = plain ]; then
    [ -f runs/expert_${x}_plain/final.safetensors ] || "$R" finetune $E/${x}_plain.yaml --no-progress
  else
    P=runs/expert_${x}_pretrain
    [ -f $P/final.safetensors ] || "$R" pretrain $E/${x}_pretrain.yaml --no-progress
    [ -f $P/ranking_mac.json ] || "$R" mac $P/final.safetensors --config $E/${x}_pretrain.yaml \
        --per-source 10 --size 64 --steps 200 --threads 1 --quiet --out $P/ranking_mac.json
    [ -f runs/expert_${x}_finetune/final.safetensors ] || "$R" finetune $E/${x}_finetune.yaml --no-progress
  fi
done
