"""How bright and how dense rain streaks are: real rainy/clean pairs against ramir's synthetic rain.

    python -m experiments.default_v1.rain_stats        # reads ../shared/data (never committed)
    python -m experiments.default_v1.rain_stats --model runs/default_finetune3/final.safetensors  # + failures

For each set: the fraction of pixels that the rain brightens by more than 5/255 (mean over RGB) and
their mean brightening, averaged over images. With ``--model``: per Rain12 / Rain100L_10 image, the
PSNR of the input and of the model's output on the streak pixels (the rain brightens them by more than
10/255 in some channel) and on the rest, so one sees whether a model removes rain or only damages the
rain-free pixels (RGB uint8, 4-pixel border cropped). Written for the first default model's light-rain
source (default_finetune4.yaml beside this script, read from the recipe): it shows how far the default
synthetic ranges are from Rain12/Rain100L.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ramir.data.folders import list_images, pair_folders, read_rgb_float
from ramir.data.online import Degradation, build_degradation
from ramir.metrics import quantize_u8
from ramir.training.config import load_recipe

LIGHT_RAIN_RECIPE, LIGHT_RAIN_SOURCE = Path(__file__).with_name("default_finetune4.yaml"), "rain_light"
THRESHOLD = 5.0  # on 0-255


def light_rain() -> Degradation:
    """The light-rain source's degradation, as the recipe defines it (one definition, not a copy)."""
    sources = load_recipe(LIGHT_RAIN_RECIPE).data["train"]["sources"]
    return build_degradation(next(s for s in sources if s["name"] == LIGHT_RAIN_SOURCE)["degradation"])


def streak_stats(rainy: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """(fraction of pixels brightened by more than THRESHOLD, their mean brightening) on 0-255."""
    diff = (rainy.astype(np.float64) - clean.astype(np.float64)).mean(axis=-1) * 255.0
    hit = diff > THRESHOLD
    return float(hit.mean()), float(diff[hit].mean()) if hit.any() else 0.0


def pairs(root: Path) -> list[tuple[Path, Path]]:
    """(rainy, clean) files of an ``input/``, ``target/`` folder, matched by name as training does."""
    return pair_folders(root, "input_target").pairs


def paired(root: Path) -> list[tuple[float, float]]:
    return [streak_stats(read_rgb_float(a), read_rgb_float(b)) for a, b in pairs(root)]


def synthetic(root: Path, n: int, seed: int, degrade: Degradation) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for path in list_images(root)[:n]:
        clean = read_rgb_float(path)
        out.append(streak_stats(degrade(clean, rng), clean))
    return out


def masked_psnr(img: np.ndarray, ref: np.ndarray, mask: np.ndarray, border: int = 4) -> float:
    """PSNR (dB) of uint8 RGB ``img`` against ``ref`` on the pixels of ``mask`` (border cropped)."""
    diff = (img.astype(np.float64) - ref.astype(np.float64))[border:-border, border:-border]
    m = mask[border:-border, border:-border]
    mse = float(np.mean(diff[m] ** 2)) if m.any() else 0.0
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-10))


def where_it_fails(model: str, root: Path) -> None:
    """Per image: input and output PSNR on the streak pixels and on the rain-free ones."""
    from ramir.inference import load

    restorer = load(model, device="cpu", tile=0)
    print(f"\n{root.name}: PSNR (RGB) input -> output, on streak pixels | on rain-free pixels")
    for a, b in pairs(root):
        x, t = quantize_u8(read_rgb_float(a)), quantize_u8(read_rgb_float(b))
        y = restorer.restore(x)  # uint8 in, uint8 out
        streak = (x.astype(np.int16) - t.astype(np.int16)).max(axis=-1) > 10
        print(f"{a.name:<16} streak px {streak.mean():.3f}  streaks {masked_psnr(x, t, streak):6.2f} -> "
              f"{masked_psnr(y, t, streak):6.2f} | rain-free {masked_psnr(x, t, ~streak):6.2f} -> "
              f"{masked_psnr(y, t, ~streak):6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", type=Path)
    p.add_argument("--synthetic-images", type=int, default=100)
    p.add_argument("--model", help="also show where this checkpoint fails on Rain12 / Rain100L_10")
    args = p.parse_args()
    d, n = args.data, args.synthetic_images
    sets = {
        "Rain12 (test)": paired(d / "test/Rain12"),
        "Rain100L_10 (test)": paired(d / "test/Rain100L_10"),
        "Rain100H 1-70 (train)": paired(d / "train/Rain100H_1-70"),
        f"synthetic rain, default ranges ({n} BSDS432)": synthetic(d / "train/BSDS432", n, 0,
                                                                   build_degradation("rain")),
        f"synthetic light rain ({n} BSDS432)": synthetic(d / "train/BSDS432", n, 0, light_rain()),
    }
    print(f"{'set':<46} {'images':>6} {'streak px':>9} {'mean +/255':>10}")
    for name, rows in sets.items():
        a = np.array(rows)
        print(f"{name:<46} {len(a):>6} {a[:, 0].mean():>9.3f} {a[:, 1].mean():>10.1f}")
    if args.model:
        for name in ("Rain12", "Rain100L_10"):
            where_it_fails(args.model, d / "test" / name)


if __name__ == "__main__":
    main()
