"""``make demo`` / ``ramir demo``: degrade photos we may ship, restore them with the embedded model.

The photos are scikit-image's bundled ones (public domain or CC0, see skimage.data); each gets one of the
seven degradations RAM targets, or two at once (a noisy JPEG, a hazy noisy photo), with a fixed seed, so
the demo is the same on every machine. For each case the demo writes the degraded input, the restoration
and a before|after picture, and prints PSNR (reference protocol: RGB uint8, crop 4) before and after and
what the model did (the restorations a routed model chose, in order).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramir.fileio import atomic_path

# (name, skimage.data function, degradation kind, level or None for the default random draw, seed)
CASES: list[tuple[str, str, str, float | None, int]] = [
    ("astronaut_noise25", "astronaut", "noise", 25.0, 1),
    ("coffee_blur2", "coffee", "blur", 2.0, 2),
    ("chelsea_jpeg20", "chelsea", "jpeg", 20.0, 3),
    ("rocket_haze", "rocket", "haze", 1.6, 4),
    ("coffee_rain", "coffee", "rain", 0.008, 5),
    ("astronaut_lowlight", "astronaut", "low_light", 0.04, 6),
    ("chelsea_motion", "chelsea", "motion", 15.0, 7),
    ("astronaut_noise_jpeg", "astronaut", "noise+jpeg", None, 8),
    ("rocket_haze_noise", "rocket", "haze+noise", None, 9),
]
# the composite cases: their steps, in order (ramir.data.online's chain)
COMPOSITES: dict[str, list[dict]] = {
    "noise+jpeg": [{"kind": "noise", "sigma": 20.0}, {"kind": "jpeg", "quality": 40.0}],
    "haze+noise": [{"kind": "haze", "beta": 1.4}, {"kind": "noise", "sigma": 12.0}],
}


@dataclass
class DemoResult:
    name: str
    kind: str
    psnr_input: float
    psnr_restored: float
    seconds: float
    applied: str = "-"  # what a routed model did ("noise+jpeg", "unchanged"); "-" for a plain network


def clean_photo(name: str) -> np.ndarray:
    """``skimage.data.<name>()`` as float32 RGB in [0, 1] (grey repeated to 3 channels, alpha dropped)."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3].astype(np.float32) / 255.0


def degrade_case(clean: np.ndarray, kind: str, level: float | None, seed: int) -> np.ndarray:
    """A case's degraded photo: one degradation at ``level``, or a composite of :data:`COMPOSITES`."""
    from ramir.evaluation import degrade

    if kind in COMPOSITES:
        return degrade(clean, "chain", None, seed, {"steps": COMPOSITES[kind]})
    return degrade(clean, kind, level, seed)


def _save_png(path: Path, rgb01: np.ndarray) -> None:
    from PIL import Image

    u8 = (np.clip(rgb01, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(u8, "RGB").save(tmp, format="PNG")


def run_demo(out_dir: str | Path, model: str | None = None, device: str = "auto") -> list[DemoResult]:
    """Degrade, restore and write every case of :data:`CASES` under ``out_dir``."""
    from ramir.errors import RamirError
    from ramir.imageio import compare_image
    from ramir.inference import load
    from ramir.metrics import psnr

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise RamirError(f"--out {out_dir}: is a file; name a folder for the demo's pictures")
    # PyTorch: for seven small photos a first-run ONNX export would cost more than it saves
    restorer = load(model, device=device, backend="torch")
    out = Path(out_dir)  # created once the model has loaded: a failed start leaves nothing behind
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, photo, kind, level, seed in CASES:
        clean = clean_photo(photo)
        degraded = degrade_case(clean, kind, level, seed)
        t0 = time.perf_counter()
        restored = restorer.restore(degraded)
        seconds = time.perf_counter() - t0
        gt = (clean * 255.0 + 0.5).astype(np.uint8)
        as_u8 = lambda a: (np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8)  # noqa: E731
        decisions = getattr(restorer, "last_decisions", [])
        applied = decisions[0].summary if decisions and getattr(restorer, "expert_names", None) else "-"
        results.append(DemoResult(name, kind, psnr(as_u8(degraded), gt), psnr(as_u8(restored), gt), seconds,
                                  applied))
        _save_png(out / f"{name}_input.png", degraded)
        _save_png(out / f"{name}_restored.png", restored)
        with atomic_path(out / f"{name}_compare.png") as tmp:
            compare_image(degraded, restored).save(tmp, format="PNG")
    return results


def format_table(results: list[DemoResult]) -> str:
    lines = ["| case | degradation | PSNR input | PSNR restored | restoration applied | seconds |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.kind} | {r.psnr_input:.2f} | {r.psnr_restored:.2f} | {r.applied} | "
                     f"{r.seconds:.2f} |")
    return "\n".join(lines)
