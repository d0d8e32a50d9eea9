#!/usr/bin/env bash
# The default model and the small-scale test of the paper's claims (docs/default-model.md,
# docs/reproduction.md), exactly as run. Each step resumes after a kill; run from the repository root
# with the venv's `ramir` on PATH. Two jobs run at a time, one thread each (2-core machine).
set -euo pipefail
P=runs/study_pretrain
# run a command unless the same command is already running (e.g. started by hand before this script)
once() { pgrep -f -- "${*:1:3}" >/dev/null || "$@"; }
MAC_ARGS=(--config configs/study_pretrain.yaml --per-source 5 --size 64 --steps 200 --threads 1 --quiet)

# (a) plain paired training, same iterations as pre-training + fine-tuning   } in parallel
# stage 1 of (b)-(e): MIM pre-training                                        }
[ -f runs/study_plain/final.safetensors ] || once ramir finetune configs/study_plain.yaml --no-progress &
[ -f $P/final.safetensors ] || once ramir pretrain configs/study_pretrain.yaml --no-progress
while pgrep -f "ramir pretrain configs/study_pretrain.yaml" >/dev/null; do sleep 10; done
# stage 2: MAC, and the paper's baselines (Integrated Gradients, random)
[ -f $P/ranking_mac.json ] || ramir mac $P/final.safetensors "${MAC_ARGS[@]}" --out $P/ranking_mac.json \
    --heatmap $P/mac_heatmap.png &
[ -f $P/ranking_ig.json ] || ramir mac $P/final.safetensors "${MAC_ARGS[@]}" --method ig --out $P/ranking_ig.json
[ -f $P/ranking_random.json ] || ramir mac $P/final.safetensors "${MAC_ARGS[@]}" --method random \
    --out $P/ranking_random.json
wait
# stage 3: (b) MAC top 10% = configs/study_finetune.yaml, (c) random 10%, (d) IG 10%, (e) all layers
ft() { [ -f "runs/$1/final.safetensors" ] || ramir finetune configs/study_finetune.yaml --no-progress \
    --set name="$1" "${@:2}"; }
ft study_finetune &
ft study_full100 --set finetune.ranking=null --set finetune.ratio=1.0
wait
ft study_random10 --ranking $P/ranking_random.json &
ft study_ig10 --ranking $P/ranking_ig.json
wait
echo "all runs finished"
# added after (b) and (e) had been measured: MAC top 30% (the paper's PromptIR ratio), run beside (c)/(d)
ft study_mac30 --set finetune.ratio=0.3
