"""``ramir pretrain CONFIG``: masked-image-modelling pre-training from a YAML recipe (RAM_SPEC §2, §5).

``stage: pretrain_adasam`` recipes train RAM++'s mask generator beside the network (RAMPP_SPEC §b).

Runs on one process as it is, or on N GPUs under ``torchrun --nproc_per_node=N -m ramir pretrain ...``.
A rerun of the same command resumes from the newest complete state in the output directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``pretrain`` and ``finetune``."""
    parser.add_argument("config", help="YAML recipe (see configs/README.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set optim.lr=2e-4 --set train.batch_size=8 "
                             "(repeatable; the value is read as YAML)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", nargs="?", const="required", default="auto", metavar="STATE",
                       help="resume from the newest state in the output directory, or from STATE "
                            "(default: resume when a state exists, else start fresh)")
    group.add_argument("--no-resume", dest="resume", action="store_const", const="never",
                       help="start fresh; refuses an output directory that already holds states")
    parser.add_argument("--output", metavar="DIR", help="output directory (default: the recipe's output_dir)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (train.threads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_stage(args: argparse.Namespace, stage: str, set_values: dict[str, Any]) -> int:
    """Load the recipe, apply ``--set`` then the dedicated options (``set_values``: dotted key -> value,
    set as they are, not parsed as YAML), and train."""
    from ramir.training import load_recipe, train
    from ramir.training.config import PRETRAIN_STAGES

    values = dict(set_values)
    if args.threads is not None:
        values["train.threads"] = args.threads
    if args.output:
        values["output_dir"] = args.output
    recipe = load_recipe(args.config, args.overrides, values)
    if recipe.stage not in (PRETRAIN_STAGES if stage == "pretrain" else (stage,)):
        command = "pretrain" if recipe.stage in PRETRAIN_STAGES else recipe.stage
        raise ValueError(f"{args.config} is a {recipe.stage} recipe; use `ramir {command}`")
    resume = args.resume if args.resume in ("auto", "required", "never") else Path(args.resume)
    result = train(recipe, resume=resume, progress=not args.no_progress)
    if result.final is not None:
        print(f"{stage}: {result.iteration} iterations; weights: {result.final}")
        if recipe.stage == "pretrain_adasam":
            from ramir.training.adasam_stage import joint_weights_path

            print(f"{stage}: mask generator: {joint_weights_path(result.final)}")
        return 0
    if result.interrupted:
        print(f"{stage}: stopped at iteration {result.iteration}; the state is saved in "
              f"{result.output_dir / 'ckpt'}; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "pretrain", {})


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="masked image modelling pre-training (stage 1)",
        description="Pre-train a restoration network with pixel masks on paired data (RAM stage 1).",
    )
    add_training_arguments(parser)
    parser.set_defaults(func=run)
