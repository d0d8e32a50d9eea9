"""Rain streaks transplanted from a paired rain data set onto other clean photos.

ramir's own streak model (:mod:`ramir.data.synthetic`) is one renderer; a network trained on it alone
learns that renderer's streaks. A paired set (rainy, clean) holds another renderer's streaks exactly:
``rainy - clean``. Rain100H, the one paired set beside the project, is heavy rain: streaks in several
directions over a fog-like veil. Light rain of the same renderer (Rain100L's kind) is one direction of
those streaks without the veil, so a bank keeps, for each pair,

- the streak layer: ``rainy - clean`` less its veil (a morphological opening removes structures
  thinner than a few pixels, i.e. the streaks; a blur of that is the veil);
- a direction map: for each pixel the angle whose line filter answers most, so a draw can keep the
  streaks of one direction only.

:func:`random_rain_transfer` adds a random crop of one bank layer, one direction or all, scaled, to a
clean image (the pairs are near additive: ``rainy >= clean`` everywhere in Rain100H).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ramir.data.degradations import Range, sample_range
from ramir.errors import DataError

ANGLES = np.arange(-45, 46, 3, dtype=np.float32)  # degrees from vertical; rain falls within +-45
LINE_LENGTH = 21  # px: the line filter that reads a streak's direction


@dataclass(frozen=True)
class StreakBank:
    """Streak layers (float16, HxW, in [0, 1]) with their direction maps (uint8 index into ANGLES)."""

    streaks: tuple[np.ndarray, ...]
    directions: tuple[np.ndarray, ...]
    veils: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.streaks)


def line_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised 1-px line of ``length`` px at ``angle`` degrees from vertical."""
    k = np.zeros((length, length), np.float32)
    c = length // 2
    t = np.linspace(-c, c, 4 * length)
    a = np.deg2rad(angle)
    xs = np.rint(c + t * np.sin(a)).astype(int)
    ys = np.rint(c + t * np.cos(a)).astype(int)
    k[ys, xs] = 1.0
    return k / k.sum()


def split_rain(rainy: np.ndarray, clean: np.ndarray, veil_size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(streaks, veil) of one pair, both HxW float32: the grey rain layer ``rainy - clean`` split into
    what is thinner than ``veil_size`` px (streaks) and a smooth remainder (veil)."""
    rain = np.clip(rainy.astype(np.float32) - clean.astype(np.float32), 0.0, 1.0).mean(axis=2)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (veil_size, veil_size))
    veil = cv2.GaussianBlur(cv2.morphologyEx(rain, cv2.MORPH_OPEN, disk), (0, 0), 3.0)
    return np.clip(rain - veil, 0.0, 1.0), np.clip(veil, 0.0, 1.0)


def direction_map(streaks: np.ndarray) -> np.ndarray:
    """For each pixel, the index into :data:`ANGLES` of the line filter that answers most (uint8)."""
    responses = np.stack([cv2.filter2D(streaks, -1, line_kernel(LINE_LENGTH, a)) for a in ANGLES])
    return responses.argmax(axis=0).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def load_streak_bank(
    root: str, only: str | None = None, exclude: str | None = None, layout: str = "input_target"
) -> StreakBank:
    """The bank of a paired rain folder (``only``/``exclude``: name lists, as a source's). Cached: a
    training run and an evaluation build it once per process (a few seconds for 70 pairs)."""
    from ramir.data.folders import filter_by_names, pair_folders, read_name_list, read_rgb_float

    pairs = sorted(pair_folders(root, layout).pairs)
    keep = set(
        filter_by_names(
            [lq for lq, _ in pairs],
            only=None if only is None else read_name_list(only),
            exclude=None if exclude is None else read_name_list(exclude),
        )
    )
    pairs = [(lq, gt) for lq, gt in pairs if lq in keep]
    if not pairs:
        raise DataError(f"streak bank {root}: no pairs left after its name lists")
    streaks, directions, veils = [], [], []
    for lq, gt in pairs:
        rainy, clean = read_rgb_float(lq), read_rgb_float(gt)
        if rainy.shape != clean.shape:
            raise DataError(f"streak bank {root}: {lq.name} and its target differ in size")
        s, v = split_rain(rainy, clean)
        streaks.append(s.astype(np.float16))
        directions.append(direction_map(s))
        veils.append(v.astype(np.float16))
    return StreakBank(tuple(streaks), tuple(directions), tuple(veils))


def _cover(layer: np.ndarray, h: int, w: int, top: float, left: float) -> np.ndarray:
    """An ``h x w`` window of ``layer`` at relative offset (top, left), reflected where it is smaller."""
    lh, lw = layer.shape[:2]
    if lh < h or lw < w:
        layer = np.pad(layer, ((0, max(0, h - lh)), (0, max(0, w - lw))), mode="reflect")
        lh, lw = layer.shape[:2]
    y, x = int(top * (lh - h + 1)), int(left * (lw - w + 1))
    return layer[y : y + h, x : x + w]


def one_direction(
    directions: np.ndarray, streaks: np.ndarray, rng: np.random.Generator, spread: int = 1
) -> np.ndarray:
    """A soft mask (float32) of the pixels whose direction is one drawn from the layer's own histogram,
    weighted by streak intensity (between streaks the direction means nothing); ``spread`` neighbouring
    angles either side are kept too."""
    counts = np.bincount(
        directions.ravel(), weights=streaks.ravel().astype(np.float64), minlength=len(ANGLES)
    )
    if counts.sum() <= 0:
        return np.ones(directions.shape, np.float32)
    pick = int(rng.choice(len(ANGLES), p=counts / counts.sum()))
    mask = ((np.abs(directions.astype(np.int16) - pick) <= spread) & (streaks > 0.02)).astype(np.float32)
    # on streak pixels only, grown by a pixel before softening, so a 1-px streak keeps its strength
    return cv2.GaussianBlur(cv2.dilate(mask, np.ones((3, 3), np.uint8)), (0, 0), 0.7)


def random_rain_transfer(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    bank: StreakBank | None = None,
    strength: Range = (0.3, 1.0),
    single: Range = 0.7,
    veil: Range = (0.0, 0.2),
) -> np.ndarray:
    """Streaks of a random bank layer on ``img``: all directions or, with probability ``single``, one;
    scaled by ``strength``, plus ``veil`` times the layer's veil; mirrored half of the time."""
    if bank is None or len(bank) == 0:
        raise DataError("rain_transfer needs a streak bank: 'bank: FOLDER' of rainy/clean pairs")
    h, w = img.shape[:2]
    i = int(rng.integers(len(bank)))
    top, left = float(rng.random()), float(rng.random())
    mirror = rng.random() < 0.5
    streaks = _cover(bank.streaks[i], h, w, top, left).astype(np.float32)
    if rng.random() < sample_range(single, rng):
        streaks = streaks * one_direction(_cover(bank.directions[i], h, w, top, left), streaks, rng)
    layer = sample_range(strength, rng) * streaks
    v = sample_range(veil, rng)
    if v > 0:
        layer = layer + v * _cover(bank.veils[i], h, w, top, left).astype(np.float32)
    if mirror:
        layer = layer[:, ::-1]
    return np.clip(img + layer[..., None], 0.0, 1.0).astype(np.float32)

