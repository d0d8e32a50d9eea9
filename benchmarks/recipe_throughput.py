"""Training throughput of two recipes on their real data, timed alternately in one process.

    python -m benchmarks.recipe_throughput --old configs/default_pretrain.yaml \\
        --new experiments/experts/deblur_plain.yaml --threads 2 --steps 30 --pairs 3

Each pair times ``--steps`` engine steps of the old recipe, then of the new one (after ``--warmup``
steps each, which are not counted), drawing batches from the recipes' own sources and degradations
as a training run does (batch drawing is counted: a run waits for it). Samples/s and megapixels/s
per recipe, and the new/old ratio of each pair; the median pair is the figure to quote. Run it on an
idle machine: the CPU and thread count are printed with the table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import describe_machine
from benchmarks.train_bench import timed_steps


def trainer_for(recipe_path: str, overrides: list[str], out: Path, threads: int):
    from ramir.training import Trainer, load_recipe

    recipe = load_recipe(
        recipe_path,
        [
            *overrides,
            f"train.threads={threads}",
            "schedule.iterations=100000",
            "train.val_every=0",
            "train.save_every=0",
        ],
    )
    recipe.data.pop("val", None)
    trainer = Trainer(recipe, output_dir=out, resume="never", progress=False)
    size = recipe.data["train"].get("patch_size", 64)
    return trainer, recipe.train.batch_size, size


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="recipe measured as the baseline")
    p.add_argument("--new", required=True, help="recipe measured against it")
    p.add_argument("--set-old", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--set-new", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--pairs", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for label, path, sets in (("old", args.old, args.set_old), ("new", args.new, args.set_new)):
            trainer, batch, size = trainer_for(path, sets, Path(tmp) / label, args.threads)
            timed_steps(trainer, args.warmup)
            runs[label] = (trainer, batch, size)
        print(describe_machine())
        print(
            f"threads {args.threads}; {args.steps} steps per recipe per pair, {args.pairs} pairs, "
            "batch drawing counted"
        )
        for label, (trainer, batch, size) in runs.items():
            t = trainer.recipe.train
            print(
                f"  {label}: {getattr(args, label)} {' '.join(getattr(args, 'set_' + label))} -> "
                f"{trainer.recipe.model.name if trainer.recipe.model else '?'}, "
                f"batch {batch} x {size}x{size}, "
                f"workers {t.workers}, channels_last {t.channels_last}"
            )
        ratios, rates = [], {"old": [], "new": []}
        print(
            f"{'pair':>4} {'old samples/s':>14} {'new samples/s':>14} "
            f"{'old MP/s':>9} {'new MP/s':>9} {'ratio':>6}"
        )
        for i in range(args.pairs):
            row = {}
            for label, (trainer, batch, size) in runs.items():
                seconds = sum(timed_steps(trainer, args.steps))
                row[label] = (args.steps * batch / seconds, args.steps * batch * size * size / seconds / 1e6)
                rates[label].append(row[label])
            ratios.append(row["new"][0] / row["old"][0])
            print(
                f"{i + 1:>4} {row['old'][0]:>14.1f} {row['new'][0]:>14.1f} {row['old'][1]:>9.3f} "
                f"{row['new'][1]:>9.3f} {ratios[-1]:>5.2f}x",
                flush=True,
            )
        for trainer, _, _ in runs.values():
            trainer.close()
    mp = {k: statistics.median(r[1] for r in v) for k, v in rates.items()}
    print(
        f"median ratio (samples/s, new/old): {statistics.median(ratios):.2f}x "
        f"(pairs {min(ratios):.2f}-{max(ratios):.2f}); pixels/s new/old: {mp['new'] / mp['old']:.2f}x"
    )


if __name__ == "__main__":
    main()
