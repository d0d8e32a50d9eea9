#!/usr/bin/env bash
# The first default model (experiments/default_v1/MODEL_CARD.md; today the routed model's expert for rain,
# haze and low light) and its plain-training baseline, step by step as they were run. Every step resumes
# after a kill and is skipped once its output exists. Run from anywhere with the venv's `ramir` on PATH.
# One thread per job, as the recipes say (train.threads: 1). On the 2-core machine the RAM chain and the
# plain chain were run side by side; here they run one after the other.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
P=runs/default_pretrain
H=experiments/default_v1
train() {  # train STAGE RECIPE RUN: ramir STAGE RECIPE unless runs/RUN/final.safetensors exists
    [ -f "runs/$3/final.safetensors" ] || ramir "$1" "$2" --no-progress
}

# stage 1: MIM pre-training
train pretrain configs/default_pretrain.yaml default_pretrain
# stage 2: MAC ranking of the 89 layers on 45 crops (5 per source), T = 200
[ -f $P/ranking_mac.json ] || ramir mac $P/final.safetensors --config configs/default_pretrain.yaml \
    --per-source 5 --size 64 --steps 200 --threads 1 --quiet --out $P/ranking_mac.json --heatmap $P/mac_heatmap.png
# stage 3: fine-tune the top 30 % of the ranking on whole images, then four more cycles: second (re-weighted
# mix, warm restart), third (more clean -> clean samples, lower rate), fourth (a light-rain source), fifth
# (more noise, fewer clean samples). The fifth cycle's other variant, default_finetune5.yaml, was run
# beside default_finetune5b.yaml and not shipped.
train finetune configs/default_finetune.yaml default_finetune
for cycle in 2 3 4 5b; do
    train finetune $H/default_finetune$cycle.yaml default_finetune$cycle
done
# baseline: plain paired training with as many iterations as pre-training + fine-tuning, then the same
# cycles: both chains end at 55,000 iterations
train finetune configs/default_plain.yaml default_plain
for cycle in 2 3 4 5; do
    train finetune $H/default_plain$cycle.yaml default_plain$cycle
done
# ship: the fine-tuned weights (EMA + raw) became the package's default model (until 2026-12-03)
echo "done: runs/default_finetune5b/final.safetensors is the first default model"
