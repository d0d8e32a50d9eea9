"""Weights stored in fp16 against fp32: PSNR of the restorations on validation images, per task.

    python experiments/experts/reconfigure_routed.py MODEL runs/model_fp16.safetensors --fp16
    python -m benchmarks.fp16_weights --fp32 MODEL --fp16 runs/model_fp16.safetensors --max-images 4

Loading upcasts the half-precision tensors (inference runs in fp32 either way), so the only change is
the rounding of each weight to 11 significant bits; the target is |PSNR difference| <= 0.05 dB per task.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from ramir import metrics
    from ramir.evaluation import iter_samples, load_suite
    from ramir.inference import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", required=True)
    ap.add_argument("--fp16", required=True)
    ap.add_argument("--suite", action="append", default=None)
    ap.add_argument("--max-images", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    a = load(args.fp32, device="cpu", tile=0, backend="torch")
    b = load(args.fp16, device="cpu", tile=0, backend="torch")
    print("| task | images | PSNR fp32 weights | PSNR fp16 weights | mean diff | max abs diff | same route |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    suites = args.suite or ["configs/eval/validation.yaml", "configs/eval/validation_composite.yaml"]
    for suite_path in suites:
        for task in load_suite(suite_path).tasks:
            rows = []
            for s in iter_samples(task, args.max_images):
                pa = metrics.psnr(metrics.quantize_u8(a.restore(s.lq)).astype(np.float64), s.gt_u8)
                da = a.last_decisions[0].experts
                pb = metrics.psnr(metrics.quantize_u8(b.restore(s.lq)).astype(np.float64), s.gt_u8)
                rows.append((pa, pb, da == b.last_decisions[0].experts))
            r = np.array([(x, y) for x, y, _ in rows])
            d = r[:, 1] - r[:, 0]
            d = d[np.isfinite(d)]
            worst = max(worst, float(np.abs(d).max()) if d.size else 0.0)
            same = sum(z for *_, z in rows)
            print(f"| {task.name} | {len(rows)} | {np.mean(r[:, 0]):.3f} | {np.mean(r[:, 1]):.3f} | "
                  f"{d.mean():+.4f} | {np.abs(d).max():.4f} | {same}/{len(rows)} |")
    print(f"\nlargest per-image |PSNR difference|: {worst:.4f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
