#!/usr/bin/env bash
# One expert alone (no router) on its family's tasks of the three validation splits, one thread:
#   experiments/experts/eval_expert.sh deblur LABEL CKPT   -> runs/eval/db{u,o,c}_LABEL/
#   experiments/experts/eval_expert.sh tone LABEL CKPT     -> runs/eval/t{o,u,c}_LABEL/
#   experiments/experts/eval_expert.sh noise LABEL CKPT    -> runs/eval/n{o,u}_LABEL/
#   experiments/experts/eval_expert.sh rain LABEL CKPT     -> runs/eval/r{o,c}_LABEL/
#   experiments/experts/eval_expert.sh jpeg LABEL CKPT     -> runs/eval/j{o,u,c,l}_LABEL/
# Then: python experiments/experts/below_input.py runs/eval/dbu_LABEL runs/eval/dbu_OTHER ...
set -euo pipefail
cd "$(dirname "$0")/../.."
F=$1; L=$2; C=$3
run() {  # OUT SUITE TASK...
  local out=$1 suite=$2; shift 2
  OMP_NUM_THREADS=1 .venv/bin/ramir evaluate --suite "configs/eval/$suite.yaml" "${@/#/--select=}" \
      --model "$L=$C" --baseline input --tile 0 --crops 0 --out "runs/eval/${out}_$L" --overwrite
}
case $F in
  deblur)
    run dbu validation_unseen valu-shake valu-levin valu-ggblur
    run dbo validation val-blur2 val-motion val-clean
    run dbc validation_composite valc-blur-noise valc-motion-jpeg ;;
  tone)
    run to validation val-haze val-lowlight val-clean
    run tu validation_unseen valu-haze valu-lowlight valu-shake valu-levin
    run tc validation_composite valc-haze-noise valc-lowlight-noise ;;
  noise)
    run no validation val-noise15 val-noise25 val-noise50 val-impulse val-clean
    run nu validation_unseen valu-spatialnoise valu-camnoise valu-impulse ;;
  rain)
    run ro validation val-rain val-rainlight val-rain100h val-raintransfer val-rainfaint val-clean
    run rc validation_composite valc-rain-jpeg ;;
  jpeg)
    run jo validation val-jpeg20 val-jpeg50 val-clean
    run ju validation_unseen valu-jpeg
    run jc validation_composite valc-noise-jpeg valc-rain-jpeg
    run jl validation_large vall-jpeg40 ;;
  *) echo "eval_expert.sh: family must be deblur, tone, noise, rain or jpeg, got '$F'" >&2; exit 2 ;;
esac
