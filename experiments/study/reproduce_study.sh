#!/usr/bin/env bash
# The small-scale test of the paper's claims (docs/reproduction.md, "Setup"), step by step as it was run.
# Every step resumes after a kill and is skipped once its output exists. Run from anywhere with the venv's
# `ramir` on PATH. One thread per job, as the recipes say (train.threads: 1); on the 2-core machine the
# runs were made two at a time, here they run one after the other.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
P=runs/study_pretrain
S=experiments/study
MAC_ARGS=(--config $S/study_pretrain.yaml --per-source 5 --size 64 --steps 200 --threads 1 --quiet)

# (a) plain paired training, as many iterations as pre-training + fine-tuning
[ -f runs/study_plain/final.safetensors ] || ramir finetune $S/study_plain.yaml --no-progress
# stage 1 of (b)-(e): MIM pre-training
[ -f $P/final.safetensors ] || ramir pretrain $S/study_pretrain.yaml --no-progress
# stage 2: MAC, and the paper's baselines (Integrated Gradients, random)
[ -f $P/ranking_mac.json ] || ramir mac $P/final.safetensors "${MAC_ARGS[@]}" --out $P/ranking_mac.json \
    --heatmap $P/mac_heatmap.png
[ -f $P/ranking_ig.json ] || ramir mac $P/final.safetensors "${MAC_ARGS[@]}" --method ig --out $P/ranking_ig.json
[ -f $P/ranking_random.json ] || ramir mac $P/final.safetensors "${MAC_ARGS[@]}" --method random \
    --out $P/ranking_random.json
# stage 3: (b) MAC top 10% = study_finetune.yaml, (c) random 10%, (d) IG 10%, (e) all layers
ft() { [ -f "runs/$1/final.safetensors" ] || ramir finetune $S/study_finetune.yaml --no-progress \
    --set name="$1" "${@:2}"; }
ft study_finetune
ft study_full100 --set finetune.ranking=null --set finetune.ratio=1.0
ft study_random10 --ranking $P/ranking_random.json
ft study_ig10 --ranking $P/ranking_ig.json
# added after (b) and (e) had been measured: MAC top 30% (the paper's PromptIR ratio)
ft study_mac30 --set finetune.ratio=0.3
echo "all runs finished"
