"""``ramir finetune CONFIG``: tune only the top MAC-ranked layers of a pre-trained network (RAM_SPEC §4).

``--ranking`` is the JSON written by ``ramir mac``; ``--init`` the pre-trained checkpoint (its raw,
non-EMA weights unless the recipe says ``finetune.init: ema``).
"""

from __future__ import annotations

import argparse

from ramir.cli.pretrain import add_training_arguments, run_stage


def run(args: argparse.Namespace) -> int:
    extra: dict[str, object] = {}
    if args.ranking:
        extra["finetune.ranking"] = args.ranking
    if args.init:
        extra["init_from"] = args.init
    if args.ratio is not None:
        extra["finetune.ratio"] = args.ratio
    return run_stage(args, "finetune", extra)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune", help="fine-tune the MAC-selected layers (stage 3)",
        description="Fine-tune the top layers of a MAC ranking on whole degraded images (RAM stage 3).",
    )
    add_training_arguments(parser)
    parser.add_argument("--ranking", metavar="JSON", help="layer ranking from `ramir mac` (finetune.ranking)")
    parser.add_argument("--init", metavar="CKPT", help="pre-trained checkpoint to start from (init_from)")
    parser.add_argument("--ratio", type=float, help="fraction of the ranked layers to tune (finetune.ratio)")
    parser.set_defaults(func=run)
