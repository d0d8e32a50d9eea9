"""Peak memory and time of RFR's DINOv2 feature pass: the whole image at once against tile by tile.

RFR feeds DINOv2 one token per 8x8 pixels of the photo (RAMPP_SPEC §e), so a side of S px is
(S/8)^2 tokens and the backbone's global attention grows with the square of that. This measures what
that means for tiled restoration: is one feature pass over the whole photo (the same features every
tile would then cut from) affordable, or must each tile compute its own? DINOv2-small's shape (384
wide, 12 layers, 6 heads, patch 14) with random weights: the cost does not depend on the values.

    python -m benchmarks.dino_features_bench --sizes 256 512 1024 --tile 256 --threads 2

Each configuration runs in its own subprocess, so its peak RSS is its own. Needs ``ramir[dino]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.common import current_rss_mb, describe_machine, peak_rss_mb, run_isolated

SMALL = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "patch_size": 14,
         "image_size": 518}


def worker(args: argparse.Namespace) -> dict:
    import torch

    from ramir import create_model
    from ramir.archs.rfr import dinov2_from_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = create_model("ram-rfr-dinos").eval()
    net.attach_backbone(dinov2_from_config(**SMALL))
    side, tile = args.size, args.tile
    x = torch.randn(1, 3, side, side)
    crops = [x] if args.mode == "whole" else [
        x[..., i : i + tile, j : j + tile] for i in range(0, side, tile) for j in range(0, side, tile)
    ]
    baseline = current_rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        for crop in crops:
            net.dino_features(crop)
    elapsed = time.perf_counter() - start
    tokens = (side // 8) ** 2 if args.mode == "whole" else len(crops) * (tile // 8) ** 2
    return {"size": side, "mode": args.mode, "passes": len(crops), "tokens": tokens,
            "seconds": round(elapsed, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "above_baseline_mb": round(peak_rss_mb() - baseline, 1), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)  # worker mode
    ap.add_argument("--mode", choices=["whole", "tiles"], help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.json:
        print(json.dumps(worker(args)))
        return 0
    print(describe_machine())
    print("| side | mode | passes | tokens | seconds | peak RSS MiB | above baseline MiB |")
    print("|---|---|---|---|---|---|---|")
    for side in args.sizes:
        for mode in ("whole", "tiles"):
            if mode == "tiles" and side <= args.tile:
                continue
            r = run_isolated("benchmarks.dino_features_bench",
                             ["--size", str(side), "--mode", mode, "--tile", str(args.tile)], args.threads)
            print(f"| {side} | {mode} | {r['passes']} | {r['tokens']} | {r['seconds']} | "
                  f"{r['peak_rss_mb']} | {r['above_baseline_mb']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
