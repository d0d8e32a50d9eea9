"""An expert between two checkpoints of one lineage: alpha * B + (1 - alpha) * A, weight by weight.

    python experiments/experts/interpolate_weights.py A.safetensors B.safetensors OUT.safetensors --alpha 0.5

Interpolating a fine-tuned network with the weights it started from (WiSE-FT, Wortsman et al., CVPR
2022) often keeps much of the fine-tuning's gain on what it was tuned for while losing less elsewhere;
here it is a candidate when a continued expert gains on its recipe's degradations and loses on an
unseen variant. Both checkpoints must share the architecture; their EMA weights are used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--alpha", type=float, required=True, help="weight of B (0: A, 1: B)")
    args = ap.parse_args(argv)
    a, b = load_checkpoint(args.a, prefer_ema=True), load_checkpoint(args.b, prefer_ema=True)
    if a.spec != b.spec or a.state_dict.keys() != b.state_dict.keys():
        raise SystemExit(f"{args.a} and {args.b}: different architectures")
    state = {k: (args.alpha * v.float() + (1 - args.alpha) * a.state_dict[k].float()).to(v.dtype)
             if v.is_floating_point() else v for k, v in b.state_dict.items()}
    meta = {"interpolated": {"a": str(args.a), "b": str(args.b), "alpha": args.alpha}}
    save_checkpoint(args.out, state, spec=b.spec, stage="finetune", metadata=meta)
    print(f"{args.out}: {args.alpha} x {args.b} + {1 - args.alpha} x {args.a}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
