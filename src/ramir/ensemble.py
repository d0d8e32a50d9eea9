"""Geometric self-ensemble: restore flipped and transposed copies of an image and average the answers.

A convolutional restorer is not exactly equivariant to flips and 90-degree turns (its training saw
one orientation of each scene, its padding has a side). Averaging its answers over the eight symmetries
of the square cancels part of that error, at one forward pass per view: the "+" models of EDSR and the
self-ensemble rows of SwinIR's tables. Nothing here knows the network: ``restore`` is any function from
an (N, C, H, W) tensor to one of the same size.

Views come in the order identity, horizontal flip, vertical flip, both flips, then the same four
transposed, so that ``views=2`` and ``views=4`` are the cheapest subsets closed under composition. An
expert may be limited to other views by name (:func:`parse_views`): a denoiser that learned camera noise
on one Bayer phase keeps that phase only under the identity and the transpose ("id", "t"), since every
flip of an even-sided image moves the red and blue sites.
Before turning, the image is padded by edge replication to a multiple of ``align`` (8, JPEG's block):
a flip of a 481-px-wide photo would otherwise move its compression blocks off the 8-px grid the JPEG
expert learned, and its answers on flipped views would be worse, not merely different.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

VIEWS = (1, 2, 4, 8)
ALIGN = 8

Symmetry = tuple[bool, bool, bool]  # (transpose, horizontal flip, vertical flip), applied in that order
_FLIPS = ((False, False), (True, False), (False, True), (True, True))
_SYMMETRIES: list[Symmetry] = [(t, h, v) for t in (False, True) for (h, v) in _FLIPS]
# their names, in the same order: a checkpoint lists the views an expert may take by these
NAMES = ("id", "h", "v", "hv", "t", "th", "tv", "thv")
BY_NAME: dict[str, Symmetry] = dict(zip(NAMES, _SYMMETRIES))


def parse_views(names: Sequence[str]) -> list[Symmetry]:
    """Symmetries by name (``["id", "t"]``): the identity first, so that one view is the plain pass."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names or names[0] != "id":
        raise ValueError(f"views must be a list of names starting with 'id', got {names!r}")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"views are distinct names among {', '.join(NAMES)}, got {list(names)!r}")
    return [BY_NAME[n] for n in names]


def symmetries(views: int) -> list[Symmetry]:
    """The first ``views`` symmetries (transpose, hflip, vflip); ``views`` must be 1, 2, 4 or 8."""
    if views not in VIEWS:
        raise ValueError(f"views must be one of {', '.join(map(str, VIEWS))}, got {views!r}")
    return _SYMMETRIES[:views]


def transform(x: torch.Tensor, symmetry: Symmetry) -> torch.Tensor:
    transpose, hflip, vflip = symmetry
    if transpose:
        x = x.transpose(-2, -1)
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    return x


def untransform(x: torch.Tensor, symmetry: Symmetry) -> torch.Tensor:
    transpose, hflip, vflip = symmetry
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    if transpose:
        x = x.transpose(-2, -1)
    return x


def self_ensemble(
    restore: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    views: int | Sequence[Symmetry] = 8,
    align: int = ALIGN,
) -> torch.Tensor:
    """The mean of ``restore`` over the first ``views`` symmetries of ``x`` (N, C, H, W), or over the
    symmetries listed, each answer turned back. One view, the identity, is ``restore(x)`` itself."""
    chosen = symmetries(views) if isinstance(views, int) else list(views)
    if chosen == [_SYMMETRIES[0]]:
        return restore(x)
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % align, (-w) % align
    padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
    total: torch.Tensor | None = None
    for symmetry in chosen:
        y = untransform(restore(transform(padded, symmetry).contiguous()), symmetry).float()
        total = y if total is None else total + y
    assert total is not None
    return (total / len(chosen))[..., :h, :w]
