"""A contact sheet of the training degradations: rows = clean photos, columns = clean + each degradation.

    python -m experiments.figures.contact_sheet --images ../shared/data/train/BSDS432 \\
        --kernels ../shared/data/kernels/Levin09.mat --out docs/degradations.png

Every degradation is drawn from its default training range (seeded per row and column) and applied
at the photo's native resolution to a centre crop (``--crop``), as in training; with ``--crop``
larger than ``--tile`` the tiles are downscaled, which hides fine noise and JPEG blocking.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ramir.data import degradations as deg
from ramir.data import synthetic as syn
from ramir.data.folders import list_images, read_rgb_float
from ramir.data.kernels import load_levin_kernels
from ramir.fileio import atomic_path

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def columns(kernels: list[np.ndarray] | None) -> list[tuple[str, Degrade]]:
    cols: list[tuple[str, Degrade]] = [
        ("clean", lambda img, rng: img),
        ("noise", deg.random_noise),
        ("blur", deg.random_blur),
        ("jpeg", deg.random_jpeg),
        ("haze", syn.random_haze),
        ("rain", syn.random_rain),
        ("low light", syn.random_low_light),
        ("motion (random)", syn.random_motion_blur),
    ]
    if kernels:
        cols.append(("motion (Levin)", lambda img, rng: syn.random_motion_blur(img, rng, kernels=kernels)))
    return cols


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top : top + s, left : left + s]


def label(width: int, text: str, height: int = 22) -> np.ndarray:
    bar = np.full((height, width, 3), 255, np.uint8)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.putText(
        bar, text, ((width - tw) // 2, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1, cv2.LINE_AA
    )
    return bar


def contact_sheet(
    paths: list[Path], kernels: list[np.ndarray] | None, crop: int, tile: int, seed: int
) -> np.ndarray:
    cols = columns(kernels)
    gap = 4
    rows = [
        np.concatenate(
            [np.pad(label(tile, name), ((0, 0), (0, gap), (0, 0)), constant_values=255) for name, _ in cols],
            axis=1,
        )
    ]
    for r, path in enumerate(paths):
        clean = centre_crop(read_rgb_float(path), crop)
        tiles = []
        for c, (_, fn) in enumerate(cols):
            out = fn(clean, np.random.default_rng([seed, r, c]))
            t = cv2.resize(np.clip(out, 0, 1), (tile, tile), interpolation=cv2.INTER_AREA)
            t = np.rint(t * 255).astype(np.uint8)
            tiles.append(np.pad(t, ((0, gap), (0, gap), (0, 0)), constant_values=255))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, type=Path, help="folder of clean photos")
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.add_argument("--kernels", type=Path, help="MATLAB file of real blur kernels (Levin09.mat)")
    p.add_argument("--rows", type=int, default=4, help="number of photos")
    p.add_argument("--crop", type=int, default=160, help="centre crop degraded at native resolution")
    p.add_argument("--tile", type=int, default=160, help="tile size on the sheet")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    images = list_images(args.images)
    step = max(1, len(images) // args.rows)
    paths = images[::step][: args.rows]
    kernels = load_levin_kernels(args.kernels) if args.kernels else None
    sheet = contact_sheet(paths, kernels, args.crop, args.tile, args.seed)
    with atomic_path(args.out) as tmp:
        ok, buf = cv2.imencode(
            ".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]
        )
        if not ok:
            raise SystemExit(f"could not encode {args.out}")
        tmp.write_bytes(buf.tobytes())
    print(
        f"{args.out}: {sheet.shape[1]}x{sheet.shape[0]}, {args.out.stat().st_size / 1e6:.2f} MB, "
        f"photos: {', '.join(p.name for p in paths)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
