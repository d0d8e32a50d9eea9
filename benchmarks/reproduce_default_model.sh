#!/usr/bin/env bash
# The shipped default model (docs/default-model.md) and its plain-training baseline, exactly as run.
# Each step resumes after a kill and is skipped once done; run from the repository root with the venv's
# `ramir` on PATH. Two jobs run at a time, one thread each (2-core machine).
set -euo pipefail
export OMP_NUM_THREADS=1
P=runs/default_pretrain
# run a command unless the same command is already running (e.g. started by hand before this script)
once() { pgrep -f -- "${*:1:3}" >/dev/null || "$@"; }

# baseline: plain paired training, as many iterations as pre-training + fine-tuning  } in parallel
# stage 1: MIM pre-training                                                          }
[ -f runs/default_plain/final.safetensors ] || once ramir finetune configs/default_plain.yaml --no-progress &
[ -f $P/final.safetensors ] || once ramir pretrain configs/default_pretrain.yaml --no-progress
while pgrep -f "ramir pretrain configs/default_pretrain.yaml" >/dev/null; do sleep 10; done
# stage 2: MAC ranking of the 89 layers on 45 crops (5 per source), T = 200
[ -f $P/ranking_mac.json ] || ramir mac $P/final.safetensors --config configs/default_pretrain.yaml \
    --per-source 5 --size 64 --steps 200 --threads 1 --quiet --out $P/ranking_mac.json --heatmap $P/mac_heatmap.png
# stage 3: fine-tune the top 30 % of the ranking on whole images
[ -f runs/default_finetune/final.safetensors ] || ramir finetune configs/default_finetune.yaml --no-progress
wait
# stage 3, second cycle (re-weighted mix, warm restart), third cycle (more clean -> clean samples, lower
# rate), fourth cycle (a light-rain source) and fifth cycle (more noise, fewer clean samples), each beside
# the plain baseline's same cycle: both chains end at 55,000 iterations. (The fifth cycle's other variant,
# configs/default_finetune5.yaml, was run beside default_finetune5b.yaml and not shipped.)
plain_cycles() {
    [ -f runs/default_plain2/final.safetensors ] || once ramir finetune configs/default_plain2.yaml --no-progress
    [ -f runs/default_plain3/final.safetensors ] || once ramir finetune configs/default_plain3.yaml --no-progress
    [ -f runs/default_plain4/final.safetensors ] || once ramir finetune configs/default_plain4.yaml --no-progress
    [ -f runs/default_plain5/final.safetensors ] || once ramir finetune configs/default_plain5.yaml --no-progress
}
plain_cycles &
[ -f runs/default_finetune2/final.safetensors ] || once ramir finetune configs/default_finetune2.yaml --no-progress
[ -f runs/default_finetune3/final.safetensors ] || once ramir finetune configs/default_finetune3.yaml --no-progress
[ -f runs/default_finetune4/final.safetensors ] || once ramir finetune configs/default_finetune4.yaml --no-progress
[ -f runs/default_finetune5b/final.safetensors ] || once ramir finetune configs/default_finetune5b.yaml --no-progress
wait
# ship: the fine-tuned weights (EMA + raw) become the package's default model
echo "done: cp runs/default_finetune5b/final.safetensors src/ramir/weights/default.safetensors"
