"""Store a trained expert's weights in fp16, small enough to commit, for a new machine to judge or continue.

    python experiments/experts/store_fp16.py runs/expert_deblur_cycle13/final.safetensors \\
        experiments/experts/pending/deblur_cycle13.safetensors

An expert that finished training but was not yet judged in the routed model would otherwise live only in
``runs/``, which a new machine does not have. The fp16 file (about 0.9 MB for a ``nafnet-s``) is what the
routed model stores of it anyway (upcast at load), so ``reconfigure_routed.py --expert NAME=FILE`` takes it
as it would the run's own checkpoint, and ``ramir finetune --set init_from=FILE`` continues from it.
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
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    ckpt = load_checkpoint(args.source, prefer_ema=True)  # the EMA weights, as the routed model keeps them
    if ckpt.spec is None:
        raise SystemExit(f"{args.source}: no recorded architecture to store with the weights")
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    meta = {k: v for k, v in ckpt.metadata.items() if k not in ("ramir_version", "torch_version", "date")}
    meta.update(stored_from=str(args.source), weights_dtype="float16")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, state, spec=ckpt.spec, stage="finetune", metadata=meta)
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.2f} MiB, fp16 of {args.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
