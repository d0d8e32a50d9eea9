#!/usr/bin/env bash
# The quick check that chose between candidate weights of the first default model (MODEL_CARD.md here):
# the tasks where the bar was tight (noise 25 against NLM; Rain12, Rain100L, motion blur, blur and JPEG
# against the input), one evaluation per candidate, one thread each, side by side. Usage, from anywhere:
#   experiments/default_v1/eval_candidates.sh ft5=runs/default_finetune5/final.safetensors \
#       ft5b=runs/default_finetune5b/final.safetensors
# Writes runs/eval/crit_<label>/ (report.md, per_image.csv). Same degradations (seeds) as
# experiments/default_v1/eval_default_model.sh, so the input rows of either report apply.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
D=../shared/data/test
for spec in "$@"; do
    label=${spec%%=*}
    ramir evaluate --model "$spec" --baseline input \
        --task noise25=clean:$D/CBSD68:noise:25 --task rain12=paired:$D/Rain12 \
        --task rain100l=paired:$D/Rain100L_10 --task motion=clean:$D/CBSD68:motion \
        --task blur2=clean:$D/CBSD68:blur:2.0 --task jpeg50=clean:$D/CBSD68:jpeg:50 \
        --tile 0 --crops 0 --out "runs/eval/crit_$label" --overwrite > "runs/eval/crit_$label.log" 2>&1 &
done
wait
for spec in "$@"; do sed -n '/^| method/,/^$/p' "runs/eval/crit_${spec%%=*}/report.md" | head -n 4; done
