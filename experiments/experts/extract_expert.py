"""Write one expert of a routed checkpoint as a checkpoint of its own (to continue its training).

    python experiments/experts/extract_expert.py src/ramir/weights/default.safetensors deblur \\
        runs/expert_deblur_shipped.safetensors
    ramir finetune experiments/experts/deblur_plain.yaml \\
        --set init_from=runs/expert_deblur_shipped.safetensors \\
        --set name=expert_deblur_cycle2 --set optim.lr=3e-4

The shipped file is the state that training carries from one working session to the next: it holds each
expert's EMA weights, which a further cycle starts from (a warm restart, not an exact resume: the
optimiser's moments are not kept, which would triple what the repository's history grows by).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir.checkpoints import load_network, save_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("routed", type=Path)
    ap.add_argument("expert")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    net = load_network(args.routed)
    names = getattr(net, "expert_names", None)
    if names is None or args.expert not in names:
        raise SystemExit(f"{args.routed}: no expert {args.expert!r} (experts: {names})")
    save_checkpoint(
        args.out,
        net.experts[names.index(args.expert)],
        stage="finetune",
        metadata={"extracted_from": str(args.routed), "expert": args.expert},
    )
    print(f"{args.out}: expert {args.expert} of {args.routed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
