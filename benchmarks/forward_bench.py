"""Forward latency, FLOPs and peak memory of the reference network configurations on CPU.

    python -m benchmarks.forward_bench                      # both configs, 256 and 512, 2 threads
    python -m benchmarks.forward_bench --models ram-swinir --sizes 256 --threads 1 --straightforward

Each (model, size, threads, path) runs in a fresh process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json

import torch


def measure(model_name: str, size: int, threads: int, repeats: int, straightforward: bool) -> dict:
    """Median forward time (batch 1, fp32, inference_mode) and FLOPs of one configuration."""
    from benchmarks.common import flop_counter, median_time, peak_rss_mb, seeded_network_and_input
    from ramir.archs.common import straightforward_path

    net, x = seeded_network_and_input(model_name, size, threads)
    with torch.inference_mode(), straightforward_path(straightforward):
        counter = flop_counter()
        with counter:
            y = net(x)
        flops = counter.get_total_flops()
        med, times = median_time(lambda: net(x), repeats=repeats, warmup=1)
    return {
        "model": model_name, "size": size, "threads": threads, "path": "straightforward" if straightforward
        else "fast", "median_s": med, "times_s": times, "gflop": flops / 1e9,
        "gflops_per_s": flops / 1e9 / med, "peak_rss_mb": peak_rss_mb(), "out_shape": list(y.shape),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ram-swinir", "promptir", "nafnet-s"])
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--straightforward", action="store_true", help="also time the slow literal path")
    p.add_argument("--json", action="store_true", help="(internal) measure one config, print JSON")
    args = p.parse_args()

    if args.json:  # child process: exactly one configuration
        print(json.dumps(measure(args.models[0], args.sizes[0], args.threads[0], args.repeats,
                                 args.straightforward)))
        return

    from benchmarks.common import cpu_model, peak_gflops, run_isolated

    print(f"CPU: {cpu_model()}; torch {torch.__version__}; fp32, batch 1, median of {args.repeats}")
    print(f"{'model':<12} {'size':>5} {'thr':>3} {'path':<15} {'median s':>9} {'GFLOP':>8} {'GFLOP/s':>8} "
          f"{'% peak':>6} {'peak RSS MB':>11}")
    paths = [False, True] if args.straightforward else [False]
    speedups = []
    for model in args.models:
        for size in args.sizes:
            for threads in args.threads:
                results = {}
                for slow in paths:
                    extra = ["--straightforward"] if slow else []
                    r = run_isolated("benchmarks.forward_bench", ["--models", model, "--sizes", str(size),
                                     "--repeats", str(args.repeats), *extra], threads)
                    results[r["path"]] = r
                # One arithmetic for both rows: the straightforward path's count where it ran (the fast
                # path's whole-map count, which the counter's hooks force, includes SwinIR's redone
                # wrapped windows, work its timed piecewise run does not do).
                gflop = results.get("straightforward", results["fast"])["gflop"]
                peak, _ = peak_gflops(threads)
                for r in results.values():
                    rate = gflop / r["median_s"]
                    print(f"{model:<12} {size:>5} {threads:>3} {r['path']:<15} {r['median_s']:>9.3f} "
                          f"{gflop:>8.1f} {rate:>8.1f} {100 * rate / peak:>5.1f}% "
                          f"{r['peak_rss_mb']:>11.0f}", flush=True)
                medians = {path: r["median_s"] for path, r in results.items()}
                if len(medians) == 2:
                    ratio = medians["straightforward"] / medians["fast"]
                    speedups.append(f"{model} {size} {threads} thr: fast {ratio:.2f}x the straightforward")
    peak, how = peak_gflops(1)
    print(f"peak assumed: {how} = {peak:.1f} GFLOP/s per thread")
    if args.straightforward:
        print("GFLOP: torch.utils.flop_counter on the straightforward path, used for both rows")
    for line in speedups:  # separate processes, one after the other: on a busy machine prefer interleaving
        print(line)


if __name__ == "__main__":
    main()
