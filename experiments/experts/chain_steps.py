"""Every step of a routed model's chain on validation images, to choose the chain's settings offline.

    python experiments/experts/chain_steps.py MODEL --out runs/chain_steps.jsonl [--max-images 16] \\
        --suite configs/eval/validation.yaml --suite configs/eval/validation_composite.yaml ...

Runs the chain with up to ``--steps`` steps and no threshold, and writes one JSON line per image: task,
image, input PSNR, the router's first look (every class's probability) and per step the expert, the
router's class, its probability and the PSNR after it.
A threshold or a step limit is then a replay of these lines (``--choose``): for each candidate, the
final PSNR per task and how many images end below their input; ``--after '{"tone": ["noise"]}'`` replays
them under an order rule too (the routed setting ``chain_after``: tone as a later step only right after
the noise expert).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def _psnr(x: torch.Tensor, gt_u8: np.ndarray) -> float:
    from ramir import metrics

    img = metrics.quantize_u8(np.asarray(x)[0].transpose(1, 2, 0)).astype(np.float64)
    return metrics.psnr(img, gt_u8)


def _recorder(r, gt_u8: np.ndarray, steps: list[dict]):
    """An ``apply`` for run_chain that also writes each step's PSNR into ``steps``."""

    def apply(name: str, x: torch.Tensor) -> torch.Tensor:
        y = r._apply_expert(name, x)
        steps.append({"expert": name, "psnr": _psnr(y, gt_u8)})
        return y

    return apply


def record(args: argparse.Namespace) -> None:
    from ramir.evaluation import iter_samples, load_suite
    from ramir.inference import load
    from ramir.routing import run_chain

    torch.set_num_threads(1)
    r = load(args.model, device="cpu", tile=0, backend="torch")
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(d["task"], d["image"]) for d in map(json.loads, out.read_text().splitlines())}
    with out.open("a") as f:
        for suite in args.suite:
            for task in load_suite(suite).tasks:
                for s in iter_samples(task, args.max_images):
                    if (task.name, s.name) in done:
                        continue
                    steps: list[dict] = []
                    apply = _recorder(r, s.gt_u8, steps)
                    x = torch.from_numpy(s.lq).permute(2, 0, 1)[None]
                    _, d = run_chain(x, route=r._route_one, expert_of=r._expert_of, apply=apply,
                                     max_steps=args.steps, threshold=0.0)
                    for st, step in zip(steps, d.steps, strict=True):
                        st.update(label=step.label, p=step.p)
                    line = {"task": task.name, "image": s.name, "input": _psnr(x, s.gt_u8), "steps": steps,
                            "stop": d.stop, "first": d.probabilities}
                    f.write(json.dumps(line) + "\n")
                    f.flush()


def _replay(line: dict, max_steps: int, threshold: float, after: dict) -> float:
    """The PSNR a recorded image ends at under other chain settings: ramir.routing.run_chain itself, its
    router and experts replaced by the recorded steps (the image is the index of the next step)."""
    from ramir.routing import run_chain

    steps = line["steps"]

    def route(i: int) -> tuple[dict[str, float], str]:  # a class per recorded step; past them, the stop
        return ({str(i): steps[i]["p"]}, str(i)) if i < len(steps) else ({}, "end")

    def expert_of(label: str) -> str | None:
        return None if label == "end" else steps[int(label)]["expert"]

    _, d = run_chain(0, route=route, expert_of=expert_of, apply=lambda _e, i: i + 1, max_steps=max_steps,
                     threshold=threshold, after=after)
    return steps[len(d.steps) - 1]["psnr"] if d.steps else line["input"]


def choose(args: argparse.Namespace) -> None:
    lines = [json.loads(t) for t in Path(args.out).read_text().splitlines()]
    candidates = [(k, th) for k in (1, 2, 3) for th in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)]
    tasks = list(dict.fromkeys(d["task"] for d in lines))
    after = json.loads(args.after) if args.after else {}
    print("| steps, threshold | " + " | ".join(tasks) + " | mean gain | below |")
    print("|---|" + "---|" * (len(tasks) + 2))
    for k, th in candidates:
        if k == 1 and th > 0:
            continue
        gains, below = defaultdict(list), 0
        for d in lines:
            final = _replay(d, k, th, after)
            gains[d["task"]].append(final - d["input"])
            below += final < d["input"] - 1e-6
        means = [float(np.mean(gains[t])) for t in tasks]
        cells = " | ".join(f"{m:+.2f}" for m in means)
        print(f"| {k}, {th} | {cells} | {np.mean(means):+.3f} | {below} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--out", required=True)
    ap.add_argument("--suite", action="append", default=[])
    ap.add_argument("--max-images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--choose", action="store_true", help="replay the recorded lines for candidate settings")
    ap.add_argument("--after", help="with --choose: an order rule as JSON, e.g. '{\"tone\": [\"noise\"]}'")
    args = ap.parse_args(argv)
    if args.choose:
        choose(args)
    else:
        record(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
