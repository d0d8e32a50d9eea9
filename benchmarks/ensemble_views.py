"""Geometric self-ensemble per validation task: gain over the input with 1, 2, 4 and 8 views, and time.

    python -m benchmarks.ensemble_views --model src/ramir/weights/default.safetensors --max-images 8 \
        --select val-noise25 --select val-rain

Each view count restores the same images with ``ramir.inference.load(..., ensemble=N)`` (routing looks
once, at the image itself; each expert then averages N flipped/turned views, at most the number its
checkpoint allows, ``ensemble_views``). Run it on a checkpoint without view limits to choose them: an
expert whose task loses with more views gets a limit. One thread, so the times compare; they also say
what the views cost.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

SUITES = ["configs/eval/validation.yaml", "configs/eval/validation_composite.yaml"]


def main(argv: list[str] | None = None) -> int:
    from ramir.evaluation import iter_samples, load_suite, measure
    from ramir.inference import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--suite", action="append", default=None, help="default: ordinary and composite splits")
    ap.add_argument("--select", action="append", default=[], metavar="TASK", help="only these tasks")
    ap.add_argument("--views", default="1,2,4,8", help="view counts to compare (default: %(default)s)")
    ap.add_argument("--max-images", type=int, default=8)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    counts = [int(v) for v in args.views.split(",")]
    restorers = {n: load(args.model, device="cpu", tile=0, backend="torch", ensemble=n) for n in counts}
    print("| task | images | experts | " + " | ".join(f"{n} view(s)" for n in counts) + " |")
    print("|---|---|---|" + "---|" * len(counts))
    results = {}
    for suite in args.suite or SUITES:
        for task in load_suite(suite).tasks:
            if args.select and task.name not in args.select:
                continue
            gains: dict[int, list[float]] = {n: [] for n in counts}
            outputs: dict[int, list[float]] = {n: [] for n in counts}
            seconds = dict.fromkeys(counts, 0.0)
            experts, clean = set(), False
            for sample in iter_samples(task, args.max_images):
                base = measure(sample.lq, sample.gt_u8)["psnr_reference"]
                clean = clean or math.isinf(base)
                for n, restorer in restorers.items():
                    start = time.perf_counter()
                    out = restorer.restore_rgb(sample.lq)
                    seconds[n] += time.perf_counter() - start
                    psnr = measure(out, sample.gt_u8)["psnr_reference"]
                    outputs[n].append(psnr)
                    gains[n].append(psnr - base)
                experts.add("+".join(restorers[counts[0]].last_decisions[0].experts) or "none")
            if not gains[counts[0]]:
                continue
            if clean:  # clean photos: the input is the target (infinite PSNR); report the lowest output
                row = {n: min(g) for n, g in outputs.items()}
                cells = " | ".join(f"lowest {row[n]:.2f} dB ({seconds[n]:.0f} s)" for n in counts)
                images = len(outputs[counts[0]])
                results[task.name] = {"images": images, "lowest": row, "seconds": seconds}
                print(f"| {task.name} | {images} | {', '.join(sorted(experts))} | {cells} |", flush=True)
                continue
            row = {n: sum(g) / len(g) for n, g in gains.items()}
            below = {n: sum(v < 0 for v in g) for n, g in gains.items()}
            results[task.name] = {"images": len(gains[counts[0]]), "experts": sorted(experts),
                                  "gain": row, "below": below, "seconds": seconds}
            cells = " | ".join(f"{row[n]:+.3f} ({below[n]}; {seconds[n]:.0f} s)" for n in counts)
            print(f"| {task.name} | {len(gains[counts[0]])} | {', '.join(sorted(experts))} | {cells} |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
