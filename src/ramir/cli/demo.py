"""``ramir demo``: restore bundled photos degraded seven ways (and two at once) with the default model."""

from __future__ import annotations

import argparse

from ramir.fileio import atomic_write_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="degrade bundled photos 7 ways and 2 composites, restore them (before/after pictures)",
        description="Degrade scikit-image's bundled photos with each of the seven degradations (and two "
        "composites: a noisy JPEG, a hazy noisy photo) "
        "(fixed seeds) and restore them; writes inputs, restorations, before|after pictures "
        "and a PSNR table (reference protocol: RGB uint8, crop 4) to OUT.",
    )
    p.add_argument("-o", "--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--model", default=None, help="checkpoint to use instead of the embedded default model")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ramir.demo import format_table, run_demo

    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_demo(args.out, model=args.model, device=args.device)
    table = format_table(results)
    atomic_write_bytes(
        f"{args.out}/README.md",
        (
            "# ramir demo\n\nEach case: `*_input.png` (degraded), `*_restored.png`, "
            "`*_compare.png` (before | after).\n"
            "PSNR in dB, reference protocol (RGB uint8, crop 4), against the undegraded photo.\n\n"
            + table
            + "\n"
        ).encode(),
    )
    print(table)
    better = sum(r.psnr_restored > r.psnr_input for r in results)
    print(f"\nrestored {len(results)} images into {args.out}/ ({better} of {len(results)} improved in PSNR)")
    return 0
