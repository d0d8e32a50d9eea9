"""Training steps of ``nafnet-s`` in channels_last, its 1x1 convolutions run as matrix products on the NHWC
view (``ramir.archs.nafnet.PointwiseConv``, as built) against the same layers as plain convolutions.

    python -m benchmarks.pointwise_train [--threads 1] [--batch 8] [--patch 128] [--steps 6]

The experts' recipes train on one thread with batches of 8 (``experiments/experts/base.yaml``), where
PyTorch runs a 1x1 convolution through its generic ``slow_conv2d`` path. Both networks start from the
same weights and take the same steps (L1 loss, Adam) alternately after a warm-up, so the ratio is
measured under the same conditions. Benchmark an idle machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch import nn


def main(argv: list[str] | None = None) -> int:
    import ramir
    from benchmarks.common import alternating_times, describe_machine
    from ramir.archs.nafnet import PointwiseConv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    built = ramir.create_model("nafnet-s").train()
    plain = copy.deepcopy(built)
    swapped = 0
    for m in plain.modules():
        if isinstance(m, PointwiseConv):
            m.__class__ = nn.Conv2d  # the same parameters, the convolution's forward
            swapped += 1
    nets = {"1x1 as convolutions": plain, "1x1 as matrix products": built}
    for net in nets.values():
        net.to(memory_format=torch.channels_last)
    opts = {k: torch.optim.Adam(n.parameters(), 1e-4) for k, n in nets.items()}
    x = torch.rand(args.batch, 3, args.patch, args.patch).contiguous(memory_format=torch.channels_last)
    y = torch.rand(args.batch, 3, args.patch, args.patch)

    def step(k: str) -> float:
        opts[k].zero_grad(set_to_none=True)
        loss = (nets[k](x) - y).abs().mean()
        loss.backward()
        opts[k].step()
        return float(loss)

    losses = {k: step(k) for k in nets}  # warm-up; the first step's losses are equal to rounding
    times = alternating_times({k: (lambda k=k: step(k)) for k in nets}, args.steps)
    print(describe_machine())
    print(f"nafnet-s, {swapped} 1x1 layers, batch {args.batch} of {args.patch}x{args.patch}, channels_last, "
          f"{args.threads} thread(s), median of {args.steps} steps each, alternating")
    base = statistics.median(times["1x1 as convolutions"])
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k}: {med:.3f} s/step ({base / med:.2f}x), first loss {losses[k]:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
