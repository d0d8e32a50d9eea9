"""Continue a routed checkpoint's router on another recipe's sources and write the routed checkpoint back.

    python experiments/experts/finetune_router.py src/ramir/weights/default.safetensors \\
        experiments/experts/router_c6.yaml runs/routed_router_c6.safetensors --iterations 800 --lr 1e-3

The experts and settings are kept; only the router's weights change (a warm start from the shipped
router, so classes it already separates are not learned again). Source names map to classes as in
``build_routed.py``. The log (accuracy over the last batches) goes beside the output as ``.router.json``.
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

from ramir.archs import build_network, network_spec  # noqa: E402
from ramir.checkpoints import load_checkpoint, load_state_dict_strict, save_checkpoint  # noqa: E402
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
    ap.add_argument("--fp16", action="store_true", help="store floating tensors as fp16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ckpt = load_checkpoint(args.source)
    if ckpt.spec is None or ckpt.spec.arch != "routed":
        raise SystemExit(f"{args.source}: not a routed checkpoint")
    net = build_network("routed", **ckpt.spec.kwargs)
    load_state_dict_strict(net, {k: v.float() for k, v in ckpt.state_dict.items()}, "routed")
    start = time.perf_counter()
    router, log = train_router(args.recipe, SOURCE_CLASSES, net.classes, iterations=args.iterations,
                               lr=args.lr, seed=args.seed, init=net.router)
    seconds = time.perf_counter() - start
    net.router = router.eval()
    state = net.state_dict()
    if args.fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {**ckpt.metadata, "router_finetuned": {"from": str(args.source), "recipe": str(args.recipe),
                                                  "iterations": args.iterations, "lr": args.lr,
                                                  "seconds": round(seconds)},
            "weights_dtype": "float16" if args.fp16 else "float32"}
    for key in ("ramir_version", "torch_version", "date"):
        meta.pop(key, None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, state, spec=network_spec(net), stage="routed", metadata=meta)
    args.out.with_suffix(".router.json").write_text(json.dumps({"log": log, "seconds": seconds}, indent=1))
    print(f"{args.out}: router {seconds:.0f} s, last accuracy {log[-1]['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
