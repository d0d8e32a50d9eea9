"""How bright and how dense rain streaks are: real rainy/clean pairs against ramir's synthetic rain.

    python -m benchmarks.rain_stats            # reads ../shared/data (never committed)

For each set: the fraction of pixels that the rain brightens by more than 5/255 (mean over RGB) and
their mean brightening, averaged over images. Written for the default model's light-rain source
(configs/default_finetune4.yaml): it shows how far the default synthetic ranges are from Rain12/Rain100L.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ramir.data.synthetic import random_rain
from ramir.imageio import read_image

LIGHT_RAIN = {"density": (0.002, 0.012), "length": (10.0, 40.0), "angle": (-15.0, 15.0),
              "thickness": (0.0, 0.8), "brightness": (0.05, 0.3), "blur": (0.0, 1.0)}
THRESHOLD = 5.0  # on 0-255


def streak_stats(rainy: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """(fraction of pixels brightened by more than THRESHOLD, their mean brightening) on 0-255."""
    diff = (rainy.astype(np.float64) - clean.astype(np.float64)).mean(axis=-1) * 255.0
    hit = diff > THRESHOLD
    return float(hit.mean()), float(diff[hit].mean()) if hit.any() else 0.0


def load01(path: Path) -> np.ndarray:
    return read_image(path).rgb


def paired(root: Path) -> list[tuple[float, float]]:
    inputs, targets = sorted((root / "input").iterdir()), sorted((root / "target").iterdir())
    return [streak_stats(load01(a), load01(b)) for a, b in zip(inputs, targets, strict=True)]


def synthetic(root: Path, n: int, seed: int, **ranges) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for path in sorted(root.iterdir())[:n]:
        clean = load01(path)
        out.append(streak_stats(random_rain(clean, rng, **ranges), clean))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", type=Path)
    p.add_argument("--synthetic-images", type=int, default=100)
    args = p.parse_args()
    d, n = args.data, args.synthetic_images
    sets = {
        "Rain12 (test)": paired(d / "test/Rain12"),
        "Rain100L_10 (test)": paired(d / "test/Rain100L_10"),
        "Rain100H 1-70 (train)": paired(d / "train/Rain100H_1-70"),
        f"synthetic rain, default ranges ({n} BSDS432)": synthetic(d / "train/BSDS432", n, 0),
        f"synthetic light rain ({n} BSDS432)": synthetic(d / "train/BSDS432", n, 0, **LIGHT_RAIN),
    }
    print(f"{'set':<46} {'images':>6} {'streak px':>9} {'mean +/255':>10}")
    for name, rows in sets.items():
        a = np.array(rows)
        print(f"{name:<46} {len(a):>6} {a[:, 0].mean():>9.3f} {a[:, 1].mean():>10.1f}")


if __name__ == "__main__":
    main()
