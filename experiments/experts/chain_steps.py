"""Every step of a routed model's chain on validation images, to choose the chain's settings offline.

    python experiments/experts/chain_steps.py MODEL --out runs/chain_steps.jsonl [--max-images 16] \\
        --suite configs/eval/validation.yaml --suite configs/eval/validation_composite.yaml ...

Runs the chain with up to ``--steps`` steps and no threshold, and writes one JSON line per image: task,
image, input PSNR, the router's first look (every class's probability) and per step the expert, the
router's class, its probability and the PSNR after it.
A threshold or a step limit is then a replay of these lines (``--choose``): for each candidate, the
final PSNR per task and how many images end below their input; ``--after '{"tone": ["noise"]}'`` replays
them under an order rule too (the routed setting ``chain_after``: tone as a later step only right after
the noise expert), ``--learn`` under a rule read off the recording itself (``learn_after``; in-sample, so
a replay that flatters it). The first step is also recorded applied in part (its residual at weights
0, 0.1, ..., 1), so ``--blend`` replays a doubtful first step blended by the router's confidence.
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


BLENDS = tuple(i / 10 for i in range(11))  # weights of a step's residual recorded for the first step


def _recorder(r, gt_u8: np.ndarray, steps: list[dict]):
    """An ``apply`` for run_chain that also writes each step's PSNR into ``steps``, and for the first step
    the PSNR of ``x + w (y - x)`` at every weight of BLENDS (a doubtful step applied in part)."""

    def apply(name: str, x: torch.Tensor) -> torch.Tensor:
        y = r._apply_expert(name, x)
        step = {"expert": name, "psnr": _psnr(y, gt_u8)}
        if not steps:
            step["blend"] = [_psnr(x + w * (y - x), gt_u8) for w in BLENDS]
        steps.append(step)
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


def _finite_mean(means: list[float]) -> float:
    """The mean gain over tasks with a finite one (a clean photo's input PSNR is infinite)."""
    ok = [m for m in means if np.isfinite(m)]
    return float(np.mean(ok)) if ok else float("nan")


def _blend_weight(line: dict, full: float | None, doubt_only: bool, floor: bool = False) -> float:
    """The share of the first step's residual a candidate rule keeps: ``p / full`` (capped at 1) for a
    step chosen with probability ``p``, or with ``floor`` all or nothing (0 below ``full``, 1 from it);
    1 without a rule, or with ``doubt_only`` when the router did not find the photo most likely clean (a
    confident route is left as it is)."""
    if full is None or not line["steps"]:
        return 1.0
    if doubt_only and max(line["first"], key=line["first"].get) != "clean":
        return 1.0
    p = line["steps"][0]["p"]
    return float(p >= full) if floor else min(1.0, p / full)


def _blended(line: dict, w: float) -> float:
    """The recorded PSNR of the first step applied with weight ``w``, interpolated on the recorded grid."""
    grid = line["steps"][0]["blend"]
    return float(np.interp(w, np.linspace(0.0, 1.0, len(grid)), grid))


def choose_blend(args: argparse.Namespace) -> None:
    """Replay a doubtful first step applied in part (``x + w (y - x)``, ``w = p / full``) or not at all
    (``floor``: below ``full`` the image is left), the chain ending there; every other image as the chain
    (``--steps``, ``--threshold``, ``--after``) has it."""
    lines, tasks, after = _recording(args, "blend rule")
    parts = [(f, o, False) for o in (True, False) for f in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    floors = [(f, True, True) for f in (0.05, 0.1, 0.15, 0.2, 0.3)]
    rules = [(None, False, False), *parts, *floors]
    for full, doubt_only, floor in rules:
        gains, below = defaultdict(list), defaultdict(int)
        for d in lines:
            w = _blend_weight(d, full, doubt_only, floor)
            final = _blended(d, w) if w < 1.0 else _replay(d, args.steps, args.threshold, after)
            gains[d["task"]].append(final - d["input"])
            below[d["task"]] += final < d["input"] - 1e-6
        means = [float(np.mean(gains[t])) for t in tasks]
        cells = " | ".join(f"{m:+.2f} ({below[t]})" for m, t in zip(means, tasks, strict=True))
        name = ("none" if full is None else f"floor {full}" if floor else f"p/{full}") + (
            ", doubt only" if doubt_only else "")
        print(f"| {name} | {cells} | {_finite_mean(means):+.3f} | {sum(below.values())} |")


def learn_after(lines: list[dict], threshold: float) -> dict[str, list[str]]:
    """An order rule read off the recording: a second step ``first -> second`` (taken at ``threshold``) is
    allowed where the recorded second steps of that pair leave the images better in sum, refused where
    worse; pairs never recorded stay allowed (no evidence either way). Only experts with a refused
    predecessor are named, as chain_after expects."""
    change: dict[tuple[str, str], float] = defaultdict(float)
    for d in lines:
        st = d["steps"]
        if len(st) >= 2 and st[1]["p"] >= threshold:
            change[st[0]["expert"], st[1]["expert"]] += st[1]["psnr"] - st[0]["psnr"]
    experts = sorted({s["expert"] for d in lines for s in d["steps"]})
    rule = {}
    for e in experts:
        allowed = [f for f in experts if f != e and change.get((f, e), 0.0) >= 0.0]
        if len(allowed) < len(experts) - 1:
            rule[e] = allowed
    return rule


def _recording(args: argparse.Namespace, first_column: str) -> tuple[list[dict], list[str], dict]:
    """The recorded lines, their tasks in order and the order rule to replay (``--after``, or with
    ``--learn`` the one read off the lines, printed); prints the replay table's header."""
    lines = [json.loads(t) for t in Path(args.out).read_text().splitlines()]
    tasks = list(dict.fromkeys(d["task"] for d in lines))
    after = json.loads(args.after) if args.after else {}
    if args.learn:
        after = learn_after(lines, args.threshold)
        print(f"learned order rule (second steps at p >= {args.threshold:g}): {json.dumps(after)}")
    print(f"| {first_column} | " + " | ".join(tasks) + " | mean gain | below |")
    print("|---|" + "---|" * (len(tasks) + 2))
    return lines, tasks, after


def choose(args: argparse.Namespace) -> None:
    candidates = [(k, th) for k in (1, 2, 3) for th in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)]
    lines, tasks, after = _recording(args, "steps, threshold")
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
        print(f"| {k}, {th} | {cells} | {_finite_mean(means):+.3f} | {below} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--out", required=True)
    ap.add_argument("--suite", action="append", default=[])
    ap.add_argument("--max-images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--choose", action="store_true", help="replay the recorded lines for candidate settings")
    ap.add_argument("--after", help="with --choose: an order rule as JSON, e.g. '{\"tone\": [\"noise\"]}'")
    ap.add_argument("--blend", action="store_true",
                    help="with --choose: replay doubtful first steps applied in part (needs a recording "
                         "with blends), the chain otherwise at --steps and --threshold")
    ap.add_argument("--threshold", type=float, default=0.6,
                    help="with --blend: the chain's threshold; with --learn: the second steps counted")
    ap.add_argument("--learn", action="store_true",
                    help="with --choose: replay under an order rule learned from the recording (learn_after)")
    args = ap.parse_args(argv)
    if args.choose and args.blend:
        choose_blend(args)
    elif args.choose:
        choose(args)
    else:
        record(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
