"""Deepen a trained NAFNet expert without changing what it computes, to train it further with more capacity.

    python experiments/experts/grow_expert.py runs/ckpt/noise_c7.safetensors \\
        runs/ckpt/noise_c7_m6.safetensors --set middle_blocks=6

Why this works: a NAF block adds its two branches through per-channel scales (``beta``, ``gamma``) that a
fresh block starts at zero, so a block appended to a stage is the identity until training moves those
scales. Every weight of the source is copied to the same key; only the appended blocks are new. The
script checks the grown network's output against the source's before it writes anything.

``--set`` takes the blocks of NAFNet's stages (``middle_blocks=6``, ``enc_blocks=[1,1,3]``,
``dec_blocks=[1,1,2]``); a stage can only grow, since a removed block would change the output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir.archs import build_network, network_spec  # noqa: E402
from ramir.checkpoints import load_network, save_checkpoint  # noqa: E402

STAGES = ("enc_blocks", "middle_blocks", "dec_blocks")


def grown_kwargs(kwargs: dict, changes: dict) -> dict:
    """``kwargs`` with the stage sizes of ``changes``; refuses anything but growing a stage."""
    out = dict(kwargs)
    for key, value in changes.items():
        if key not in STAGES:
            raise SystemExit(f"--set {key}: only {', '.join(STAGES)} can grow")
        old = kwargs.get(key)
        new_list, old_list = (value, old) if isinstance(value, list) else ([value], [old])
        if len(new_list) != len(old_list) or any(n < o for n, o in zip(new_list, old_list, strict=True)):
            raise SystemExit(f"--set {key}={value}: must keep the levels and grow, from {old}")
        out[key] = value
    return out


def grow(source: torch.nn.Module, changes: dict) -> torch.nn.Module:
    """A deeper copy of ``source`` (a NAFNet) that computes the same function."""
    spec = network_spec(source)
    if spec is None or spec.arch != "nafnet":
        raise SystemExit("grow_expert: the source must be a NAFNet checkpoint")
    net = build_network("nafnet", **grown_kwargs(dict(spec.kwargs), changes))
    state = net.state_dict()
    old = source.state_dict()
    for key, value in old.items():
        if key not in state or state[key].shape != value.shape:
            raise SystemExit(f"grow_expert: {key} has no place in the grown network")
        state[key] = value.clone()
    net.load_state_dict(state)
    return net.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="STAGE=BLOCKS", required=True)
    args = ap.parse_args(argv)
    changes = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    source = load_network(args.source)
    net = grow(source, changes)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (net(x) - source(x)).abs().max().item()
    if diff > 1e-6:
        raise SystemExit(f"grow_expert: the grown network's output moved by {diff:.2e}; nothing written")
    added = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in source.parameters())
    save_checkpoint(args.out, net, stage="finetune",
                    metadata={"grown_from": str(args.source), "grown": json.dumps(changes)})
    print(f"{args.out}: {network_spec(net).kwargs}, +{added:,} parameters, output moved {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
