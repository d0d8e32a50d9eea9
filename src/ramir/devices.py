"""Where to run, and how much memory is free there: one answer for inference, MAC and training."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ramir.errors import ConfigError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(
    preference: str | torch.device | None = "auto",
    *,
    network: nn.Module | None = None,
    local_rank: int = 0,
    allow_mps: bool = True,
) -> torch.device:
    """The device for ``preference``: "auto" (CUDA, then Apple's MPS when ``allow_mps``, then the
    CPU), None (where ``network``'s parameters are, else as "auto"), or a name such as "cpu", "cuda",
    "cuda:1", "mps". A bare "cuda" under ``torchrun`` means this process's GPU (``local_rank``).
    A device this machine lacks is a :class:`~ramir.errors.ConfigError` naming the alternative."""
    if preference is None and network is not None:
        p = next(iter(network.parameters()), None)
        if p is not None:
            return p.device
    if preference is None or preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank) if local_rank else torch.device("cuda")
        if allow_mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(preference)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {preference!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {preference}: CUDA is not available on this machine (use --device cpu)"
            )
        if dev.index is None and local_rank:
            dev = torch.device("cuda", local_rank)
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"--device {preference}: Apple's MPS backend is not available on this machine")
    return dev


def free_memory(device: torch.device) -> int | None:
    """Bytes free for activations on ``device``: the GPU's free memory, the kernel's MemAvailable on a
    CPU (it counts reclaimable page cache, unlike MemFree), None when unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        with contextlib.suppress(Exception):
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def cpu_bf16_problem() -> str | None:
    """Why torch's CPU kernels cannot be trusted with bfloat16 here, or None when they can.

    On x86, torch's bfloat16 paths (oneDNN's packed GEMMs, the flash-attention kernel) are written for
    its AVX-512 kernels: run on the AVX2 or the baseline ones (an older CPU, or ``ATEN_CPU_CAPABILITY``),
    some raise ("pack_vnni2 is only supported when avx512 is supported" where the CPU has AMX) and the
    rest emulate bfloat16 at a loss. Other processors (ARM) are left to torch."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.upper().startswith("AVX512"):
        return None
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    how = f" (ATEN_CPU_CAPABILITY={forced})" if forced else ""
    return f"torch runs its {capability} CPU kernels here{how}, which have no bfloat16 path (needs AVX-512)"
