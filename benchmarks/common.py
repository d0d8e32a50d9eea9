"""Shared helpers for the benchmark scripts: machine description, peak FLOP/s, timing, RSS."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return f.readlines()
    except OSError:
        return []


def cpu_model() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    for line in _cpuinfo():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def peak_gflops(threads: int, ghz: float | None = None) -> tuple[float, str]:
    """Theoretical fp32 peak: cores x FLOP/cycle x clock.

    FLOP/cycle per core: two FMA units x vector lanes x 2 (multiply + add): 32 with AVX2 (8 lanes),
    64 with AVX-512 (16 lanes). The clock defaults to 2.45 GHz (AMD EPYC Zen 3 base clock) unless given.
    """
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes * 2
    ghz = ghz or float(os.environ.get("RAMIR_CPU_GHZ", "2.45"))
    how = f"{threads} core(s) x {per_cycle} FLOP/cycle (2 FMA x {lanes} fp32 lanes x 2) x {ghz} GHz"
    return threads * per_cycle * ghz, how


def flop_counter():
    """``torch.utils.flop_counter.FlopCounterMode`` that also counts the CPU's fused attention kernel.

    Its registry knows the CUDA SDPA kernels but not ``_scaled_dot_product_flash_attention_for_cpu``,
    so fast paths that call SDPA on the CPU would be credited without their attention FLOPs (the
    straightforward paths' explicit matmuls are counted). Same formula as for the CUDA kernels.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def seeded_network_and_input(model_name: str, size: int, threads: int):
    """The CPU forward benchmarks' common start: the thread count, seed 0, the named network in eval
    mode, then one random (1, 3, size, size) input, so every script times the same weights on the same
    input."""
    import torch

    from ramir import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = create_model(model_name).eval()
    return net, torch.randn(1, 3, size, size)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_isolated(module: str, args: list[str], threads: int) -> dict:
    """Run ``python -m module args`` in a fresh process (so peak RSS is its own) and parse its JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", "--threads", str(threads)],
        env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
