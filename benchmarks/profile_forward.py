"""Where a forward pass spends its time: ``torch.profiler`` operator table (fast path, CPU).

    python -m benchmarks.profile_forward --model ram-swinir --size 128 --threads 1

Prints the wall time of one plain forward, then the operators sorted by their own CPU time, with the
achieved GFLOP/s of the Linear layers (addmm) from the FLOP counter, to compare with the peak that
``benchmarks.common.peak_gflops`` assumes.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ram-swinir")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args()

    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.common import peak_gflops
    from ramir import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = create_model(args.model).eval()
    x = torch.randn(1, 3, args.size, args.size)
    with torch.inference_mode():
        net(x)  # warm-up: caches, allocator
        t0 = time.perf_counter()
        net(x)
        plain = time.perf_counter() - t0
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model} {args.size}x{args.size}, {args.threads} thread(s): {plain:.2f} s plain, "
          f"{total / 1e6:.2f} s under the profiler")
    print(f"{'operator':<52} {'self s':>7} {'share':>6} {'calls':>6}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        share = 100 * e.self_cpu_time_total / total
        print(f"{e.key[:52]:<52} {e.self_cpu_time_total / 1e6:>7.3f} {share:>5.1f}% {e.count:>6}")
    linear_flops = counter.get_flop_counts().get("Global", {}).get(torch.ops.aten.addmm, 0)
    addmm = sum(e.self_cpu_time_total for e in events if e.key == "aten::addmm") / 1e6
    if linear_flops and addmm:
        peak, how = peak_gflops(args.threads)
        rate = linear_flops / 1e9 / addmm
        print(f"Linear layers (addmm): {linear_flops / 1e9:.1f} GFLOP in {addmm:.2f} s = {rate:.1f} GFLOP/s, "
              f"{100 * rate / peak:.0f} % of the assumed peak ({how} = {peak:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
