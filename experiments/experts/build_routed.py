"""Train the router and assemble the routed default model from the experts of one chain (RAM or plain).

    python experiments/experts/build_routed.py --chain ram --out runs/routed_ram.safetensors
    python experiments/experts/build_routed.py --chain plain --out runs/routed_plain.safetensors

The router is trained once (``runs/router/router.pt``, reused by the other chain) on
``experiments/experts/router.yaml``; the experts are the final checkpoints of ``run_chain.sh``.
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

from ramir.archs.routed import DegradationRouter  # noqa: E402
from ramir.checkpoints import save_checkpoint  # noqa: E402
from ramir.training.router import assemble, train_router  # noqa: E402

CLASSES = ["clean", "noise", "blur", "motion", "jpeg", "rain", "haze", "lowlight"]
EXPERTS = ["noise", "deblur", "jpeg", "rain", "tone"]
CLASS_TO_EXPERT = {
    "clean": -1,
    "noise": 0,
    "blur": 1,
    "motion": 1,
    "jpeg": 2,
    "rain": 3,
    "haze": 4,
    "lowlight": 4,
}
SOURCE_CLASSES = {
    "clean": "clean",
    "noise": "noise",
    "blur": "blur",
    "motion": "motion",
    "motion_levin": "motion",
    "jpeg": "jpeg",
    "rain_synthetic": "rain",
    "rain_light": "rain",
    "rain100h": "rain",
    "rain_transfer": "rain",
    "haze": "haze",
    "lowlight": "lowlight",
    # sixth cycle (router_c6.yaml): more blur and noise variants, and composites labelled by the expert
    # that must run first (motion under JPEG: deblur first, the JPEG expert is the chain's second step)
    "camera": "noise",
    "aniso": "blur",
    "defocus": "blur",
    "blur_jpeg": "blur",
    "linear": "motion",
    "motion_jpeg": "motion",
    # seventh cycle (router_c7.yaml): the trajectory model's wandering, doubling-back paths
    "wander": "motion",
    "wander_noise": "motion",
    # eighth cycle (router_c8.yaml): bright, low-contrast photos (a thin white veil) blurred or shaken
    "veil_blur": "blur",
    "veil_motion": "motion",
    # (router_c8b.yaml) photos enlarged to a camera photo's pixel-level softness, then noised or compressed
    "zoom_camera": "noise",
    "zoom_noise": "noise",
    "zoom_jpeg": "jpeg",
    "zoom_clean": "clean",
    # (router_c10.yaml) random-valued impulses: isolated outliers are noise, not raindrops
    "impulse": "noise",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", choices=["ram", "plain"], required=True)
    ap.add_argument(
        "--expert",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="take this expert from another checkpoint (chosen on the validation split)",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--router", type=Path, default=ROOT / "runs" / "router" / "router.pt")
    ap.add_argument("--router-recipe", type=Path, default=ROOT / "experiments" / "experts" / "router.yaml",
                    help="the router's training sources (when --router does not exist yet)")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--keep-threshold", type=float, default=0.0,
                    help="probability the clean class needs before an image is left unchanged")
    ap.add_argument("--class-bias", action="append", default=[], metavar="CLASS=LOGIT",
                    help="added to the router's logit of CLASS (a prior chosen on validation), e.g. rain=0.5")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    class_bias = {}
    for text in args.class_bias:
        name, _, value = text.partition("=")
        if name not in CLASSES:
            raise SystemExit(f"--class-bias: no class {name!r} (classes: {', '.join(CLASSES)})")
        class_bias[name] = float(value)
    torch.set_num_threads(args.threads)
    if args.router.is_file():
        saved = torch.load(args.router, weights_only=True)
        router = DegradationRouter(len(CLASSES), saved["width"])
        router.load_state_dict(saved["state_dict"])
    else:
        start = time.perf_counter()
        router, log = train_router(
            args.router_recipe,
            SOURCE_CLASSES,
            CLASSES,
            iterations=args.iterations,
        )
        args.router.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"width": router.full[0].out_channels, "state_dict": router.state_dict()}, args.router)
        (args.router.parent / "log.json").write_text(
            json.dumps({"log": log, "seconds": time.perf_counter() - start}, indent=1)
        )
        print(f"router: {time.perf_counter() - start:.0f} s, last accuracy {log[-1]['accuracy']:.3f}")
    stage = "finetune" if args.chain == "ram" else "plain"
    paths = {e: ROOT / "runs" / f"expert_{e}_{stage}" / "final.safetensors" for e in EXPERTS}
    for text in args.expert:
        name, _, path = text.partition("=")
        if name not in paths:
            raise SystemExit(f"--expert: no expert {name!r} (experts: {', '.join(EXPERTS)})")
        paths[name] = Path(path).resolve()
    net = assemble(router.eval(), CLASSES, [CLASS_TO_EXPERT[c] for c in CLASSES], paths,
                   keep_threshold=args.keep_threshold, class_bias=class_bias)
    meta = {
        "chain": args.chain,
        "experts": {e: str(p.relative_to(ROOT)) for e, p in paths.items()},
        "router": str(args.router.relative_to(ROOT))
        if args.router.is_relative_to(ROOT)
        else str(args.router),
    }
    save_checkpoint(args.out, net, stage="routed", metadata=meta)
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
