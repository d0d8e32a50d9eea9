"""What the rest of ramir knows about a network family, in one place beside the network.

Each network file ends with one :class:`Architecture`: its class, how to recognise its state dict
and read the constructor arguments back from key names and shapes, the size multiple its input is
padded to, an activation-memory estimate per pixel (for automatic tiling), the blocks worth
recomputing under activation checkpointing, and whether it exports to ONNX. The registry
(:mod:`ramir.archs`), checkpoint loading, inference, export and the training memory code ask the
descriptor; none of them names an architecture. Adding a network is one file with one descriptor,
registered with :func:`ramir.archs.register_architecture` (spandrel works the same way).

The small shape readers below are what the built-in detectors share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ramir.errors import CheckpointError

StateDict = Mapping[str, torch.Tensor]
Kwargs = dict[str, Any]

# Peak activation bytes per input pixel of one fp32 forward pass when a network says nothing
# (deliberately generous: a wrong guess costs one out-of-memory retry on a GPU, or swap on a CPU).
FALLBACK_BYTES_PER_PIXEL = 16_384


def _one(_: Kwargs) -> int:
    return 1


def _fallback_bytes(_: Kwargs) -> int:
    return FALLBACK_BYTES_PER_PIXEL


@dataclass(frozen=True)
class Architecture:
    """One network family: everything other modules may ask about it.

    ``looks_like``/``detect`` recognise a bare state dict (a reference ``.pth``) and read the
    constructor's keyword arguments from it; architectures whose checkpoints always carry their
    config (a routed network) leave them ``None``. Detectors run in registration order.
    ``expected_keys`` name a few keys that identify the family, for the error message when nothing
    matches. ``unused_keys`` matches keys that the family's original code defines but never uses;
    they are dropped on loading, with a warning giving ``unused_keys_reason``.
    ``prepare`` runs once after a checkpoint is loaded for inference (e.g. loading a frozen backbone,
    so that a missing one fails once and not per image). ``adopt_state`` completes the state dict of
    another family into one that a freshly built network loads strictly, when a recipe starts from it
    (RAM++: RFR from a RAM-Restormer), and returns None when the state is the family's own.
    """

    name: str
    network: type[nn.Module]
    size_multiple: Callable[[Kwargs], int] = _one
    bytes_per_pixel: Callable[[Kwargs], int] = _fallback_bytes
    checkpoint_blocks: tuple[type[nn.Module], ...] = ()
    exportable: bool = True
    looks_like: Callable[[StateDict], bool] | None = None
    detect: Callable[[StateDict], Kwargs] | None = None
    expected_keys: tuple[str, ...] = ()
    display_name: str = ""
    unused_keys: re.Pattern[str] | None = None
    unused_keys_reason: str = ""
    prepare: Callable[[nn.Module], None] | None = None
    adopt_state: Callable[[nn.Module, StateDict], dict[str, torch.Tensor] | None] | None = None

    @property
    def title(self) -> str:
        return self.display_name or self.name


# ------------------------------------------------------------------------------------ shape readers
def shape(sd: StateDict, key: str, arch: str) -> tuple[int, ...]:
    """The shape of ``sd[key]``, or a one-line error naming what the state dict looked like."""
    if key not in sd:
        raise CheckpointError(f"looks like {arch} but has no {key!r}")
    return tuple(sd[key].shape)


def indices(sd: StateDict, pattern: str, arch: str) -> list[int]:
    """Sorted indices captured by ``pattern`` (one group), checked to run 0..n-1."""
    found = sorted({int(m.group(1)) for k in sd if (m := re.match(pattern, k))})
    if found != list(range(len(found))):
        raise CheckpointError(f"looks like {arch} but the indices of {pattern!r} are not 0..n-1: {found}")
    return found


def ratio(hidden: int, dim: int) -> float | int:
    """The simplest r with int(dim * r) == hidden (an int when exact)."""
    if hidden % dim == 0:
        return hidden // dim
    for decimals in range(1, 8):
        r = round(math.ceil(hidden / dim * 10**decimals) / 10**decimals, decimals)
        if int(dim * r) == hidden:
            return r
    return hidden / dim


def expansion_factor(pairs: list[tuple[int, int]], preferred: float = 2.66) -> float:
    """A GDFN hidden width is int(channels * f): find the f matching every (channels, hidden) pair,
    ``preferred`` when it fits (Restormer-family checkpoints all use 2.66)."""
    def fits(f: float) -> bool:
        return all(int(d * f) == h for d, h in pairs)

    if fits(preferred):
        return preferred
    lo = max(h / d for d, h in pairs)
    for decimals in range(0, 8):
        f = round(math.ceil(lo * 10**decimals) / 10**decimals, decimals)
        if fits(f):
            return float(f)
    raise CheckpointError(f"no ffn_expansion_factor fits the GDFN widths (channels, hidden) {pairs[:5]}")


def differing(found: Kwargs, defaults: Kwargs) -> Kwargs:
    """Only the arguments that differ from the constructor's defaults, so that a detected spec
    compares equal to the registry's."""
    return {k: v for k, v in found.items() if v != defaults[k]}
