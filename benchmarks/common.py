"""Shared helpers for the benchmark scripts: machine description, peak FLOP/s, timing, RSS.

Every script in ``benchmarks/`` runs as ``python -m benchmarks.<name> [options]`` from the repository root,
has ``--help`` and a ``main(argv=None)``, and prints :func:`describe_machine` before its figures.
"""

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


def vector_unit(flags: set[str] | None = None) -> tuple[str, int]:
    """The widest x86 vector unit the CPU flags name and its fp32 lanes.

    AVX-512 registers hold 16 fp32 values, AVX2 (256-bit) registers 8, SSE (and ARM NEON) 4.
    """
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "AVX-512", 16
    if "avx2" in flags:
        return "AVX2", 8
    return "no AVX2 / AVX-512 flag", 4


def peak_gflops(threads: int, ghz: float | None = None) -> tuple[float, str]:
    """Theoretical fp32 peak: cores x FLOP/cycle x clock.

    FLOP/cycle per core: two FMA units x vector lanes x 2 (multiply + add): 32 with AVX2 (8 lanes),
    64 with AVX-512 (16 lanes), the lanes read from the CPU's flags (:func:`vector_unit`). The clock
    defaults to 2.45 GHz (AMD EPYC Zen 3 base clock) unless given or set by ``RAMIR_CPU_GHZ``.
    """
    _, lanes = vector_unit()
    per_cycle = 2 * lanes * 2
    ghz = ghz or float(os.environ.get("RAMIR_CPU_GHZ", "2.45"))
    how = f"{threads} core(s) x {per_cycle} FLOP/cycle (2 FMA x {lanes} fp32 lanes x 2) x {ghz} GHz"
    return threads * per_cycle * ghz, how


def describe_machine() -> str:
    """One line for the head of every benchmark's output: CPU, its vector unit, torch, the assumed peak."""
    import torch

    flags = cpu_flags()
    unit, lanes = vector_unit(flags)
    peak, how = peak_gflops(1)
    fma = ", FMA" if "fma" in flags else ""
    return (f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, {unit} ({lanes} fp32 lanes{fma}); "
            f"torch {torch.__version__}; fp32 peak assumed {peak:.1f} GFLOP/s per core ({how})")


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


def alternating_times(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each of ``fns`` over ``rounds`` rounds, one call of each per round in turn, so that every
    variant sees the same minute of a drifting machine (warm them up first). A ratio of the medians then
    compares like with like."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


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
