"""Visible artefacts of a model on validation tasks: the 8-px grid and the colour error, beside PSNR.

    python -m benchmarks.artefacts --model src/ramir/weights/default.safetensors \\
        --select val-haze --select val-lowlight [--expert tone] [--max-images 32]

Per task: mean PSNR (reference protocol, uint8 output), the grid ratio (:func:`ramir.metrics.grid_ratio`:
lattice energy of the output over the clean photo's, in flat tiles; 1 = no added grid, the target is
<= 1.1) and the mean CIEDE2000 colour error of output and input (:func:`ramir.metrics.colour_error`),
whole and its chromatic part alone (the photo's lightness given: hue and chroma only).
Validation data only (configs/eval/validation.yaml): the choices made with it are validation choices.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from ramir import metrics
    from ramir.evaluation import iter_samples, load_suite
    from ramir.inference import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--suite", default="configs/eval/validation.yaml")
    ap.add_argument("--select", action="append", default=None, help="task of the suite (repeatable)")
    ap.add_argument("--expert", default=None, help="force these experts instead of the router")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    restorer = load(args.model, device="cpu", tile=0, backend="torch")
    tasks = [t for t in suite.tasks if args.select is None or t.name in args.select]
    when = time.strftime("%Y-%m-%d")
    print(f"model {args.model or '(embedded)'}; expert {args.expert or 'routed'}; {when}")
    print("| task | images | PSNR in | PSNR out | grid in | grid out | colour err in | colour err out "
          "| chromatic in | chromatic out |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        rows = []
        for s in iter_samples(task, args.max_images):
            clean = s.gt_u8.astype(np.float32) / 255.0
            out = restorer.restore(s.lq, expert=args.expert)
            out = metrics.quantize_u8(np.clip(out, 0, 1)).astype(np.float32) / 255.0
            rows.append([
                metrics.psnr(s.lq * 255.0, s.gt_u8, crop_border=4),
                metrics.psnr(out * 255.0, s.gt_u8, crop_border=4),
                metrics.grid_ratio(s.lq, clean), metrics.grid_ratio(out, clean),
                metrics.colour_error(s.lq, clean), metrics.colour_error(out, clean),
                metrics.colour_error(s.lq, clean, lightness=False),
                metrics.colour_error(out, clean, lightness=False),
            ])
        a = np.asarray(rows, dtype=np.float64)
        mean = [math.nan if np.all(np.isnan(c)) else float(np.nanmean(c)) for c in a.T]
        print(f"| {task.name} | {len(rows)} | " + " | ".join(f"{m:.2f}" for m in mean) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
