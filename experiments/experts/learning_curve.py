"""Validation PSNR per task against training time: every kept checkpoint of one or more runs.

    python experiments/experts/learning_curve.py --run plain=runs/expert_deblur_plain \\
        --run ram=runs/expert_deblur_finetune:runs/expert_deblur_pretrain \\
        --select val-blur2 --select val-motion --out runs/eval/curve_deblur.md

``--run LABEL=DIR[:BEFORE]``: the checkpoints ``DIR/ckpt/iter_*.safetensors`` (EMA weights) and their
``.state`` files' training seconds; ``BEFORE`` is a run whose whole training time comes first (RAM's
pre-training, before its fine-tuning), counted into the x axis. Times are one core's seconds as the
runs took them (two runs shared the 2-core machine), so they compare runs trained side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir import evaluation as ev  # noqa: E402


def train_seconds(state: Path) -> float:
    return float(torch.load(state, map_location="cpu", weights_only=False).get("train_time", 0.0))


def last_state(run: Path) -> Path:
    states = sorted((run / "ckpt").glob("iter_*.state"))
    if not states:
        raise SystemExit(f"{run}: no training states")
    return states[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=DIR[:BEFORE]")
    ap.add_argument("--suite", type=Path, default=ROOT / "configs" / "eval" / "validation.yaml")
    ap.add_argument("--select", action="append", required=True, metavar="TASK")
    ap.add_argument("--out", type=Path, required=True, help="Markdown table to write")
    ap.add_argument("--every", type=int, default=1, help="every N-th checkpoint (and the last)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = [t for t in ev.load_suite(args.suite).tasks if t.name in args.select]
    rows = []
    for spec in args.run:
        label, _, dirs = spec.partition("=")
        run, _, before = dirs.partition(":")
        offset = train_seconds(last_state(Path(before))) if before else 0.0
        kept = sorted((Path(run) / "ckpt").glob("iter_*.safetensors"))
        for ckpt in [c for i, c in enumerate(kept) if (i + 1) % args.every == 0 or i == len(kept) - 1]:
            seconds = offset + train_seconds(ckpt.with_suffix(".state"))
            method = ev.model_method(f"{label}@{ckpt.stem}", str(ckpt), device="cpu", tile=0)
            summary = ev.evaluate(tasks, [method], crops=0).summary()
            psnrs = [summary[t.name][method.label]["psnr_reference"] for t in tasks]
            rows.append((label, int(ckpt.stem.split("_")[1]), seconds, psnrs))
            print(rows[-1], flush=True)
    lines = [f"| run | iteration | core-hours | {' | '.join(t.name for t in tasks)} |",
             "|---" * (len(tasks) + 3) + "|"]
    lines += [f"| {label} | {it} | {s / 3600:.3f} | " + " | ".join(f"{p:.2f}" for p in ps) + " |"
              for label, it, s, ps in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
