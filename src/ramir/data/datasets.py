"""Sources of (degraded, clean) images and the datasets built on them.

A *source* is either a folder of clean images with an online degradation (:class:`CleanSource`) or a
folder of real pairs (:class:`PairedSource`, layouts in :mod:`ramir.data.folders`). Training draws
random patches (:class:`PatchSampler`); validation takes fixed centre crops or whole images
(:class:`ValidationDataset`). As in the reference, a clean source crops and flips the clean image
first and degrades the patch afterwards; a paired source crops and flips both images identically.

Items are ``{"lq": (3, H, W) float32 RGB in [0, 1], "gt": same, "task": str}``; validation items add
``"name"`` (the clean file's name) so that results can be reported per image.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ramir.data.folders import image_size, names, read_rgb_float
from ramir.data.online import Degradation
from ramir.errors import DataError

SMALL_IMAGE_POLICIES = ("pad", "skip")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC float image -> contiguous (C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)))


def pad_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-101 padding at the bottom/right up to at least (height, width)."""
    h, w = img.shape[:2]
    ph, pw = max(0, height - h), max(0, width - w)
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")


def centre_box(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the central ``size`` x ``size`` window of an h x w image (the
    whole side where the image is smaller): the one centre crop of training, MAC and evaluation."""
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return top, left, top + ch, left + cw


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an HWC image (see :func:`centre_box`)."""
    top, left, bottom, right = centre_box(*img.shape[:2], size)
    return img[top:bottom, left:right]


def augment(img: np.ndarray, hflip: bool, vflip: bool, rot90: int) -> np.ndarray:
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if rot90:
        img = np.rot90(img, rot90)
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------------------------------ sources
class CleanSource:
    """Clean images; the degraded input is made online by ``degradation`` (RAM's LSDIR sources).

    ``base``, if given, first turns the photo into the target itself (applied before ``degradation``,
    to input and target alike): pairs that teach an expert to leave something alone, e.g. blur that is
    not its job."""

    def __init__(
        self, task: str, paths: Sequence[Path], degradation: Degradation, base: Degradation | None = None
    ) -> None:
        if not paths:
            raise DataError(f"source {task!r}: no images")
        self.task, self.paths, self.degradation, self.base = task, list(paths), degradation, base

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(None, clean image): the caller degrades after cropping."""
        return None, read_rgb_float(self.paths[index])

    def file(self, index: int) -> Path:
        return self.paths[index]

    def name(self, index: int) -> str:
        return self.paths[index].name

    def size(self, index: int) -> tuple[int, int]:
        return image_size(self.paths[index])

    def subset(self, keep: Sequence[int]) -> CleanSource:
        return CleanSource(self.task, [self.paths[i] for i in keep], self.degradation, self.base)

    def pair(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(target, input) of one clean crop: ``base`` first (if any), then ``degradation``, both drawn
        from ``rng`` in that order."""
        gt = clean
        if self.base is not None:
            gt = np.asarray(self.base(np.ascontiguousarray(clean), rng), dtype=np.float32)
            if gt.shape != clean.shape:  # e.g. zoom with whole: true, an evaluation task's base
                raise DataError(f"source {self.task!r}: its base changes the image's size "
                                f"({clean.shape[1]}x{clean.shape[0]} -> {gt.shape[1]}x{gt.shape[0]})")
        return gt, self.degradation(np.ascontiguousarray(gt), rng)


class PairedSource:
    """Real (degraded, clean) pairs of files."""

    degradation = base = None

    def __init__(self, task: str, pairs: Sequence[tuple[Path, Path]]) -> None:
        if not pairs:
            raise DataError(f"source {task!r}: no pairs")
        self.task, self.pairs = task, list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lq_path, gt_path = self.pairs[index]
        lq, gt = read_rgb_float(lq_path), read_rgb_float(gt_path)
        if lq.shape != gt.shape:
            raise DataError(
                f"source {self.task!r}: {lq_path.name} is {lq.shape[1]}x{lq.shape[0]} but its target "
                f"{gt_path.name} is {gt.shape[1]}x{gt.shape[0]}"
            )
        return lq, gt

    def file(self, index: int) -> Path:
        """The degraded input's path (unique even when several inputs share a target)."""
        return self.pairs[index][0]

    def name(self, index: int) -> str:
        return self.pairs[index][0].name

    def size(self, index: int) -> tuple[int, int]:
        return image_size(self.pairs[index][1])

    def subset(self, keep: Sequence[int]) -> PairedSource:
        return PairedSource(self.task, [self.pairs[i] for i in keep])


Source = CleanSource | PairedSource


def drop_small(source: Source, size: int) -> Source:
    """The source without images smaller than ``size`` on either side, with one warning naming them."""
    fits = [min(source.size(i)) >= size for i in range(len(source))]
    keep = [i for i, ok in enumerate(fits) if ok]
    if len(keep) < len(source):
        small = [source.file(i) for i, ok in enumerate(fits) if not ok]
        if not keep:
            raise DataError(f"source {source.task!r}: every image is smaller than {size}x{size}")
        warnings.warn(
            f"source {source.task!r}: skipping {len(small)} images smaller than {size}x{size}: "
            f"{names(small)}",
            stacklevel=2,
        )
    return source.subset(keep) if len(keep) < len(source) else source


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class PatchOptions:
    """Random patch and augmentation settings of training."""

    patch_size: int = 64
    flip: bool = True  # horizontal flip with probability 1/2 (the reference's only augmentation)
    vflip: bool = False
    rot90: bool = False
    # Pixels of real image kept around a clean source's patch while it is degraded, then cut off. Without
    # it a blur or streak near the patch's edge is computed on reflected pixels, which no real photo has;
    # a 25-px camera-shake path leaves little of a 64-px patch unaffected by that.
    context: int = 0


class PatchSampler:
    """Draws one training item from a source with a caller-supplied Generator (no state of its own)."""

    def __init__(self, source: Source, options: PatchOptions) -> None:
        self.source, self.options = source, options

    @property
    def task(self) -> str:
        return self.source.task

    def sample(self, rng: np.random.Generator) -> dict:
        """Image, crop position, flips, then the degradation: all from ``rng``, in this order."""
        o, p = self.options, self.options.patch_size
        lq, gt = self.source.load(int(rng.integers(len(self.source))))
        m = o.context if lq is None else 0
        if m:
            p += 2 * m  # a larger window, degraded whole; the patch is its centre
        gt = pad_to(gt, p, p)  # images smaller than the patch: reflect padding (or skipped when built)
        lq = pad_to(lq, p, p) if lq is not None else None
        h, w = gt.shape[:2]
        top, left = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        hflip = o.flip and rng.random() < 0.5
        vflip = o.vflip and rng.random() < 0.5
        rot = int(rng.integers(4)) if o.rot90 else 0
        gt = augment(gt[top : top + p, left : left + p], hflip, vflip, rot)
        if lq is None:  # the whole window, so that the centre sees real pixels around it
            gt, lq = self.source.pair(gt, rng)
            if m:
                gt, lq = (a[m : p - m, m : p - m] for a in (gt, lq))
        else:
            lq = augment(lq[top : top + p, left : left + p], hflip, vflip, rot)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "task": self.source.task}


# ---------------------------------------------------------------------------------------- validation
def item_seed(seed: int, task: str, index: int) -> list[int]:
    """The entropy of a validation item: stable under reordering or adding sources."""
    return [seed, zlib.crc32(task.encode("utf-8")), index]


def fixed_item(source: Source, index: int, size: int | None, seed: int) -> dict:
    """A deterministic item: centre crop of ``size`` (reflect-padded if smaller) or the whole image."""
    lq, gt = source.load(index)
    if size is not None:
        gt = centre_crop(pad_to(gt, size, size), size)
        lq = centre_crop(pad_to(lq, size, size), size) if lq is not None else None
    if lq is None:
        gt, lq = source.pair(gt, np.random.default_rng(item_seed(seed, source.task, index)))
    return {"lq": to_tensor(lq), "gt": to_tensor(gt), "task": source.task, "name": source.name(index)}


class ValidationDataset(Dataset):
    """The first ``max_images`` images of every source, cropped and degraded the same way every time."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        size: int | None = 128,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        self.sources, self.size, self.seed = list(sources), size, seed
        self.entries = [
            (k, i) for k, s in enumerate(self.sources) for i in range(min(len(s), max_images or len(s)))
        ]
        if not self.entries:
            raise DataError("validation dataset is empty")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        k, i = self.entries[index]
        return fixed_item(self.sources[k], i, self.size, self.seed)

    @property
    def tasks(self) -> list[str]:
        return [self.sources[k].task for k, _ in self.entries]
