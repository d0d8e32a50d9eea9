"""Fast against straightforward path, timed alternately in one process: the ratio on a noisy machine.

    python -m benchmarks.interleaved_bench --model ram-swinir --size 256 --threads 1 --pairs 3

Timing each path in its own process, one after the other, puts the drift of a shared VM (10-30 % over
minutes on this project's machines) into the ratio. Here both paths run on the same weights and input in
one process, fast then straightforward, ``pairs`` times after one warm-up of each; the ratio is taken per
pair (same minute, same machine state) and its median reported with the spread. ``forward_bench`` uses
:func:`interleaved` for its timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def interleaved(model_name: str, size: int, threads: int, pairs: int, straightforward: bool = True,
                count_flops: bool = False) -> dict:
    """Alternate fast / straightforward forwards (batch 1, fp32, inference_mode); per-pair ratios.

    ``straightforward=False`` times the fast path alone (``pairs`` runs). ``count_flops`` makes the
    straightforward warm-up (the fast one without that path) run under ``torch.utils.flop_counter``:
    the straightforward path's count is the arithmetic both rows are credited with (the fast path's
    counted run would take the whole-map path, since the counter's module hooks rule out the piecewise
    one), and the counted run doubles as the warm-up.
    """
    from benchmarks.common import flop_counter, seeded_network_and_input
    from ramir.archs.common import straightforward_path

    net, x = seeded_network_and_input(model_name, size, threads)
    fast, slow, flops = [], [], None
    with torch.inference_mode():
        counter = flop_counter() if count_flops else None
        with straightforward_path(straightforward):
            if counter is not None:
                with counter:
                    net(x)
                flops = counter.get_total_flops()
            else:
                net(x)
        net(x)  # warm-up of the fast path: caches, allocator
        for _ in range(pairs):
            t0 = time.perf_counter()
            net(x)
            fast.append(time.perf_counter() - t0)
            if straightforward:
                with straightforward_path():
                    t0 = time.perf_counter()
                    net(x)
                    slow.append(time.perf_counter() - t0)
    ratios = [s / f for f, s in zip(fast, slow)]
    return {"model": model_name, "size": size, "threads": threads, "fast_s": fast, "straightforward_s": slow,
            "ratios": ratios, "median_ratio": statistics.median(ratios) if ratios else None, "flops": flops}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ram-swinir")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pairs", type=int, default=3)
    args = p.parse_args(argv)
    from benchmarks.common import describe_machine

    print(describe_machine())
    r = interleaved(args.model, args.size, args.threads, args.pairs)
    print(f"{r['model']} {r['size']}x{r['size']}, {r['threads']} thread(s), {args.pairs} pairs (fast, then "
          f"straightforward), fp32, batch 1")
    for i, (f, s, q) in enumerate(zip(r["fast_s"], r["straightforward_s"], r["ratios"]), 1):
        print(f"pair {i}: fast {f:7.2f} s  straightforward {s:7.2f} s  ratio {q:.2f}x")
    lo, hi = min(r["ratios"]), max(r["ratios"])
    fast, slow = statistics.median(r["fast_s"]), statistics.median(r["straightforward_s"])
    print(f"median ratio {r['median_ratio']:.2f}x (min {lo:.2f}x, max {hi:.2f}x); "
          f"median fast {fast:.2f} s, straightforward {slow:.2f} s")


if __name__ == "__main__":
    main()
