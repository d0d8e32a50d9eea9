"""Where a forward pass spends its time: ``torch.profiler`` operator table (fast path, CPU).

    python -m benchmarks.profile_forward --model ram-swinir --size 128 --threads 1
    python -m benchmarks.profile_forward --model ram-swinir --size 256 --threads 1 --shapes --rows 25

Prints the wall time of one plain forward, then the operators sorted by their own CPU time, with the
achieved GFLOP/s of the Linear layers (their matrix products) from the FLOP counter, to compare with
the peak that ``benchmarks.common.peak_gflops`` assumes.
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ram-swinir")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--shapes", action="store_true",
                   help="one row per operator and input shapes (shows which tensors are copied, and where)")
    args = p.parse_args(argv)

    from torch.profiler import ProfilerActivity, profile

    from benchmarks.common import describe_machine, flop_counter, peak_gflops, seeded_network_and_input

    net, x = seeded_network_and_input(args.model, args.size, args.threads)
    with torch.inference_mode():
        net(x)  # warm-up: caches, allocator
        t0 = time.perf_counter()
        net(x)
        plain = time.perf_counter() - t0
        counter = flop_counter()
        with counter:
            net(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            net(x)
    events = prof.key_averages(group_by_input_shape=args.shapes)
    print(describe_machine())
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model} {args.size}x{args.size}, {args.threads} thread(s): {plain:.2f} s plain, "
          f"{total / 1e6:.2f} s under the profiler")
    heading = f"{'operator':<52} {'self s':>7} {'share':>6} {'calls':>6}"
    print(heading + ("  input shapes" if args.shapes else ""))
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        share = 100 * e.self_cpu_time_total / total
        shapes = f"  {str(e.input_shapes)[:90]}" if args.shapes else ""
        print(f"{e.key[:52]:<52} {e.self_cpu_time_total / 1e6:>7.3f} {share:>5.1f}% {e.count:>6}{shapes}")
    # The counter's module hooks make every block run on whole maps, where each Linear is one addmm; the
    # profiled pass (no hooks) runs SwinIR's blocks in pieces as mm / addmm / addmm_: same products.
    linear_flops = counter.get_flop_counts().get("Global", {}).get(torch.ops.aten.addmm, 0)
    products = ("aten::addmm", "aten::addmm_", "aten::mm")
    seconds = sum(e.self_cpu_time_total for e in events if e.key in products) / 1e6
    if seconds and linear_flops > 0.1 * counter.get_total_flops():  # networks built on Linear layers
        peak, how = peak_gflops(args.threads)
        rate = linear_flops / 1e9 / seconds
        print(f"Linear layers ({', '.join(products)}): {linear_flops / 1e9:.1f} GFLOP in {seconds:.2f} s "
              f"= {rate:.1f} GFLOP/s, {100 * rate / peak:.0f} % of the assumed peak ({how} = "
              f"{peak:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
