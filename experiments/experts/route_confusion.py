"""Which class the router gives each validation image, per task: the routing accuracy that matters.

python experiments/experts/route_confusion.py [--router runs/router/router.pt | --model ROUTED.safetensors]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "experiments" / "experts"))

from build_routed import CLASSES  # noqa: E402

from ramir import evaluation as ev  # noqa: E402
from ramir.archs.routed import DegradationRouter, centre_crop  # noqa: E402
from ramir.imagespace import normalize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--router", type=Path, default=ROOT / "runs" / "router" / "router.pt")
    ap.add_argument("--model", type=Path, help="a routed checkpoint instead of --router: its own decisions, "
                    "keep threshold included (--router: the most probable class)")
    ap.add_argument("--suite", type=Path, default=ROOT / "configs" / "eval" / "validation.yaml")
    ap.add_argument("--route-size", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.model:
        from ramir.checkpoints import load_network

        net = load_network(args.model)
        router, classes, size = net.router, net.classes, net.route_size
    else:
        saved = torch.load(args.router, weights_only=True)
        router = DegradationRouter(len(CLASSES), saved["width"])
        router.load_state_dict(saved["state_dict"])
        classes, size = CLASSES, args.route_size
    router.eval()
    print(f"| task | {' | '.join(classes)} |")
    print("|---" * (len(classes) + 1) + "|")
    for task in ev.load_suite(args.suite).tasks:
        counts: collections.Counter[str] = collections.Counter()
        for s in ev.iter_samples(task):
            x = normalize(torch.from_numpy(s.lq).permute(2, 0, 1)[None])
            with torch.no_grad():
                if args.model:  # the model's own rule, keep threshold included
                    counts[net.route_names(x)[0]] += 1
                else:
                    counts[classes[int(router(centre_crop(x, size)).argmax(1))]] += 1
        print(
            f"| {task.name} | " + " | ".join(str(counts.get(c, 0) or "") for c in classes) + " |", flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
