"""Forward latency, FLOPs and peak memory of the reference network configurations on CPU.

    python -m benchmarks.forward_bench                      # both configs, 256 and 512, 2 threads
    python -m benchmarks.forward_bench --models ram-swinir --sizes 256 --threads 1 --straightforward

Per (model, size, threads), in fresh processes: the timings, with ``--straightforward`` the two paths
alternately in one process (:func:`benchmarks.interleaved_bench.interleaved`, so the ratio is taken per
pair, free of the drift between processes run minutes apart), and each path's peak RSS from a process
of its own that runs one forward.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch


def peak_rss(model_name: str, size: int, threads: int, straightforward: bool) -> dict:
    """Peak RSS of a process that builds the network and runs one forward (batch 1, fp32, inference_mode)."""
    from benchmarks.common import peak_rss_mb, seeded_network_and_input
    from ramir.archs.common import straightforward_path

    net, x = seeded_network_and_input(model_name, size, threads)
    with torch.inference_mode(), straightforward_path(straightforward):
        y = net(x)
    return {"peak_rss_mb": peak_rss_mb(), "out_shape": list(y.shape)}


def _child(args: argparse.Namespace) -> dict:
    from benchmarks.interleaved_bench import interleaved

    model, size, threads = args.models[0], args.sizes[0], args.threads[0]
    if args.rss_only:
        return peak_rss(model, size, threads, args.straightforward)
    return interleaved(model, size, threads, args.repeats, straightforward=args.straightforward,
                       count_flops=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ram-swinir", "promptir", "nafnet-s"])
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each path (pairs, interleaved)")
    p.add_argument("--straightforward", action="store_true", help="also time the slow literal path")
    p.add_argument("--json", action="store_true", help="(internal) measure one config, print JSON")
    p.add_argument("--rss-only", action="store_true", help="(internal) one forward, report peak RSS")
    args = p.parse_args(argv)

    if args.json:  # child process: exactly one configuration
        print(json.dumps(_child(args)))
        return

    from benchmarks.common import describe_machine, peak_gflops, run_isolated

    print(describe_machine())
    print(f"fp32, batch 1, median of {args.repeats}"
          + (" (paths interleaved in one process)" if args.straightforward else ""))
    print(f"{'model':<16} {'size':>5} {'thr':>3} {'path':<15} {'median s':>9} {'GFLOP':>8} {'GFLOP/s':>8} "
          f"{'% peak':>6} {'peak RSS MB':>11}")
    extra = ["--straightforward"] if args.straightforward else []
    speedups = []
    for model in args.models:
        for size in args.sizes:
            for threads in args.threads:
                config = ["--models", model, "--sizes", str(size)]
                timed = run_isolated("benchmarks.forward_bench", [*config, "--repeats", str(args.repeats),
                                                                  *extra], threads)
                times = {"fast": timed["fast_s"]}
                if args.straightforward:
                    times["straightforward"] = timed["straightforward_s"]
                gflop = timed["flops"] / 1e9  # the straightforward path's count where it ran
                peak, _ = peak_gflops(threads)
                for path, runs in times.items():
                    flag = [] if path == "fast" else ["--straightforward"]
                    rss = run_isolated("benchmarks.forward_bench", [*config, "--rss-only", *flag],
                                       threads)["peak_rss_mb"]
                    med = statistics.median(runs)
                    rate = gflop / med
                    print(f"{model:<16} {size:>5} {threads:>3} {path:<15} {med:>9.3f} {gflop:>8.1f} "
                          f"{rate:>8.1f} {100 * rate / peak:>5.1f}% {rss:>11.0f}", flush=True)
                if timed["ratios"]:
                    lo, hi = min(timed["ratios"]), max(timed["ratios"])
                    speedups.append(f"{model} {size} {threads} thr: fast {timed['median_ratio']:.2f}x the "
                                    f"straightforward (pairs {lo:.2f}-{hi:.2f}x)")
    print("GFLOP: torch.utils.flop_counter" + (" on the straightforward path, used for both rows"
                                              if args.straightforward else ""))
    if speedups:
        print("ratio: median over pairs (fast, then straightforward, same process) of straightforward / fast")
    for line in speedups:
        print(line)


if __name__ == "__main__":
    main()
