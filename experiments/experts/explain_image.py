"""One validation image through routed models: each model's chain of decisions and the PSNR it ends at.

    python experiments/experts/explain_image.py configs/eval/validation_large.yaml vall-camnoise 106025 \
        runs/cand13a.safetensors runs/cand14b.safetensors --look-after deblur

For the photo behind a task's average: ``below_input.py`` says which task moved, the per-image CSV of
``ramir evaluate`` which photo, and this which step of the chain made the difference.
"""

from __future__ import annotations

import argparse

import torch

from ramir.evaluation import iter_samples, load_suite, measure
from ramir.inference import load


def _top(probabilities: dict[str, float], n: int = 3) -> str:
    """The ``n`` most probable classes, as 'name p, ...'."""
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(probabilities.items(), key=lambda kv: -kv[1])[:n])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("task")
    parser.add_argument("image", help="the image's name, as in per_image.csv")
    parser.add_argument("models", nargs="+")
    parser.add_argument(
        "--look-after", metavar="EXPERT", help="also force EXPERT, then show the router's look at its output"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = [t for t in load_suite(args.suite).tasks if t.name == args.task]
    if not tasks:
        parser.error(f"no task {args.task!r} in {args.suite}")
    sample = next((s for s in iter_samples(tasks[0]) if s.name == args.image), None)
    if sample is None:
        parser.error(f"no image {args.image!r} in {args.task}")
    print(f"input: {measure(sample.lq, sample.gt_u8)['psnr_reference']:.2f} dB")
    for path in args.models:
        restorer = load(path, tile=0)
        psnr = measure(restorer.restore_rgb(sample.lq), sample.gt_u8)["psnr_reference"]
        decision = restorer.last_decisions[0]
        steps = ", ".join(f"{s.expert} ({s.label} p {s.p:.2f})" for s in decision.steps) or "left alone"
        first = _top(decision.probabilities)
        print(f"{path}: {psnr:.2f} dB; steps: {steps}; stop: {decision.stop}; first look: {first}")
        if args.look_after:
            forced = restorer.restore_rgb(sample.lq, expert=args.look_after)
            psnr = measure(forced, sample.gt_u8)["psnr_reference"]
            look = _top(restorer.route(forced).probabilities)  # the router only: no expert runs
            print(f"  {args.look_after} alone: {psnr:.2f} dB; the router's look at it: {look}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
