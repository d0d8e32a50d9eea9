"""Continue a routed checkpoint's router on another recipe's sources and write the routed checkpoint back.

    python experiments/experts/finetune_router.py src/ramir/weights/default.safetensors \\
        experiments/experts/router_c6.yaml runs/routed_router_c6.safetensors --iterations 800 --lr 1e-3

The experts and settings are kept; only the router's weights change (a warm start from the shipped
router, so classes it already separates are not learned again). Source names map to classes as in
``build_routed.py``. ``--distill W --new-sources A,B`` keeps the starting router's class
probabilities on every other source (train_router freezes a copy of it as the teacher; see
``ramir.training.router.train_router``). The log (accuracy over the last batches) goes beside the
output as ``.router.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_routed import SOURCE_CLASSES  # noqa: E402
from reconfigure_routed import routed_checkpoint, routed_network, save_routed  # noqa: E402

from ramir.training.router import train_router  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("recipe", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distill", type=float, default=0.0,
                    help="weight of the KL term towards the starting router on old sources")
    ap.add_argument("--new-sources", default="", help="comma-separated sources taught from labels alone")
    ap.add_argument("--fp16", action="store_true", help="store floating tensors as fp16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ckpt = routed_checkpoint(args.source)
    net = routed_network(ckpt, ckpt.spec.kwargs)
    teacher = net.router if args.distill > 0 else None  # train_router freezes a copy of it
    new_sources = [s for s in args.new_sources.split(",") if s]
    start = time.perf_counter()
    router, log = train_router(args.recipe, SOURCE_CLASSES, net.classes, iterations=args.iterations,
                               lr=args.lr, seed=args.seed, init=net.router, teacher=teacher,
                               distill=args.distill, new_sources=new_sources)
    seconds = time.perf_counter() - start
    net.router = router.eval()
    meta = {**ckpt.metadata, "router_finetuned": {"from": str(args.source), "recipe": str(args.recipe),
                                                  "iterations": args.iterations, "lr": args.lr,
                                                  "distill": args.distill, "new_sources": new_sources,
                                                  "seconds": round(seconds)}}
    save_routed(args.out, net, meta, fp16=args.fp16)
    args.out.with_suffix(".router.json").write_text(json.dumps({"log": log, "seconds": seconds}, indent=1))
    print(f"{args.out}: router {seconds:.0f} s, last accuracy {log[-1]['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
