"""The reference degradations of RAM (RAM_SPEC §7): Gaussian noise, Gaussian blur and JPEG.

Images are HWC float32 in [0, 1] and **RGB** by default. The reference implementation handles images
in OpenCV's BGR order; every function here takes ``bgr=False`` and gives, for an RGB image, exactly
the channel-reversed result the reference gives for the same picture in BGR. Channel order matters
for two things only:

- noise: the reference draws ``normal(0, sigma, (H, W, 3))`` in HWC C-order for its BGR array, so the
  draw for its channel 0 lands on blue; we add the same draw, reversed, to an RGB image;
- JPEG: OpenCV's encoder treats its input as BGR when it converts to YCbCr.

Blur is per channel and does not care.

Numerical conventions reproduced bit-exactly (fixtures README §3.5):

- noise: ``clip(img*255 + N(0, sigma), 0, 255)`` then a **truncating** cast to uint8;
- blur: 15x15 ``cv2.getGaussianKernel`` outer product, ``cv2.filter2D`` on ``clip(img*255)`` in float32,
  reflect-101 border, result **not** quantised;
- JPEG: ``clip(img*255)`` **rounded** to uint8 (what OpenCV does inside ``imencode``), encode/decode.

Ranges: the paper samples noise sigma in (0, 50], blur sigma in [0.1, 3.1] and JPEG quality in
[20, 90] (:data:`PAPER_RANGES`, the default); the reference code draws ``randint(0, 50)``,
``arange(2, 3.1, 0.1)`` and ``randint(10, 90)`` (:data:`REFERENCE_RANGES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ramir.errors import ConfigError

RNG = np.random.Generator | np.random.RandomState


# ----------------------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Choice:
    """A parameter drawn uniformly from a finite set of values (the reference's ``randint``/``arange``)."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("a choice needs at least one value")


Range = float | tuple[float, float] | Choice


def parse_range(value: object, name: str = "value") -> Range:
    """Normalise a config value: a number (fixed), ``[lo, hi]`` (uniform) or ``{choice: [...]}``."""
    if isinstance(value, Choice):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, [lo, hi] or {{choice: [...]}}, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        if set(value) != {"choice"} or not isinstance(value["choice"], list | tuple):
            raise ConfigError(f"{name}: a mapping must be {{choice: [v1, v2, ...]}}, got {value!r}")
        vals = value["choice"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            raise ConfigError(f"{name}: choice values must be numbers, got {vals!r}")
        return Choice(tuple(float(v) for v in vals))
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = value
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)):
            raise ConfigError(f"{name}: range bounds must be numbers, got {value!r}")
        if lo > hi:
            raise ConfigError(f"{name}: range [{lo}, {hi}] has lo > hi")
        return (float(lo), float(hi))
    raise ConfigError(f"{name}: expected a number, [lo, hi] or {{choice: [...]}}, got {value!r}")


def sample_range(value: Range, rng: RNG, *, integer: bool = False) -> float:
    """One draw from a :data:`Range`; ``integer`` ranges include both ends (JPEG quality [20, 90])."""
    if isinstance(value, Choice):
        return float(value.values[int(_randint(rng, 0, len(value.values)))])
    if isinstance(value, tuple):
        lo, hi = value
        if integer:
            return float(_randint(rng, round(lo), round(hi) + 1))
        return float(rng.uniform(lo, hi))
    return float(value)


def _randint(rng: RNG, lo: int, hi: int) -> int:
    """``[lo, hi)`` for both a Generator and a legacy RandomState."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(lo, hi))
    return int(rng.randint(lo, hi))


def as_rng(rng: RNG | int | None) -> RNG:
    """Accept a Generator, a legacy RandomState, a seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator | np.random.RandomState):
        return rng
    return np.random.default_rng(rng)


# Paper ranges (default) and the reference code's ranges.
PAPER_RANGES: dict[str, dict[str, Range]] = {
    "noise": {"sigma": (0.0, 50.0)},
    "blur": {"sigma": (0.1, 3.1)},
    "jpeg": {"quality": (20.0, 90.0)},
}
REFERENCE_RANGES: dict[str, dict[str, Range]] = {
    "noise": {"sigma": Choice(tuple(float(v) for v in range(0, 50)))},  # randint(0, 50)
    "blur": {"sigma": Choice(tuple(float(v) for v in np.arange(2, 3.1, 0.1)))},  # 2.0 .. 3.0
    "jpeg": {"quality": Choice(tuple(float(v) for v in range(10, 90)))},  # randint(10, 90)
}
PRESETS: dict[str, dict[str, dict[str, Range]]] = {"paper": PAPER_RANGES, "reference": REFERENCE_RANGES}


# --------------------------------------------------------------------------------------- helpers
def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HW or HWC image, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"expected a float image in [0, 1], got dtype {img.dtype}")
    return img


def to_uint8_round(img: np.ndarray) -> np.ndarray:
    """``clip(img*255)`` rounded half-to-even, as OpenCV's saturate_cast does."""
    return np.rint(np.clip(img * np.float32(255.0), 0, 255)).astype(np.uint8)


def quantize(img: np.ndarray) -> np.ndarray:
    """Round to the 8-bit grid and back: what saving the image as PNG would do."""
    return to_uint8_round(img).astype(np.float32) / np.float32(255.0)


# ---------------------------------------------------------------------------- reference degradations
def add_gaussian_noise(
    img: np.ndarray, sigma: float, rng: RNG | int | None = None, *, bgr: bool = False
) -> np.ndarray:
    """Additive white Gaussian noise, sigma on the 0-255 scale, truncated to uint8 as the reference does.

    With ``rng=np.random.RandomState(s)`` the result equals the reference after ``np.random.seed(s)``.
    """
    img = _check_image(img)
    rng = as_rng(rng)
    noise = rng.normal(0.0, float(sigma), img.shape)  # drawn in the reference's (BGR) memory layout
    if img.ndim == 3 and not bgr:
        noise = noise[..., ::-1]
    noisy = np.clip(img * np.float32(255.0) + noise, 0, 255).astype(np.uint8)  # truncation, not rounding
    return noisy.astype(np.float32) / np.float32(255.0)


def gaussian_kernel2d(sigma: float, size: int = 15) -> np.ndarray:
    """The float64 ``outer(k, k)`` of ``cv2.getGaussianKernel(size, sigma)``."""
    k = cv2.getGaussianKernel(int(size), float(sigma))[:, 0]
    return np.outer(k, k)


def gaussian_blur(img: np.ndarray, sigma: float, kernel_size: int = 15) -> np.ndarray:
    """Isotropic Gaussian blur: ``filter2D(clip(img*255), kernel) / 255`` with reflect-101 borders.

    Float result, not quantised (the reference feeds it to the network as is).
    """
    img = _check_image(img)
    x = np.clip(img.astype(np.float32) * np.float32(255.0), 0, 255)
    out = cv2.filter2D(x, -1, gaussian_kernel2d(sigma, kernel_size), borderType=cv2.BORDER_REFLECT_101)
    return (out / np.float32(255.0)).astype(np.float32)


def jpeg_compress(img: np.ndarray, quality: float, *, bgr: bool = False) -> np.ndarray:
    """JPEG encode/decode with OpenCV at ``quality`` (rounded to int); input rounded to uint8 first."""
    img = _check_image(img)
    u8 = to_uint8_round(img)
    color = u8.ndim == 3 and u8.shape[2] == 3
    if color and not bgr:
        u8 = u8[..., ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8), [cv2.IMWRITE_JPEG_QUALITY, round(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid shapes
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {img.shape}")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if color and not bgr:
        dec = dec[..., ::-1]
    if u8.ndim == 3 and not color:
        dec = dec[..., None]
    return np.ascontiguousarray(dec).astype(np.float32) / np.float32(255.0)


# ------------------------------------------------------------------------------- random versions
def random_noise(img: np.ndarray, rng: RNG, *, sigma: Range = (0.0, 50.0), bgr: bool = False) -> np.ndarray:
    return add_gaussian_noise(img, sample_range(sigma, rng), rng, bgr=bgr)


def random_blur(img: np.ndarray, rng: RNG, *, sigma: Range = (0.1, 3.1), kernel_size: int = 15) -> np.ndarray:
    return gaussian_blur(img, sample_range(sigma, rng), int(kernel_size))


def random_jpeg(img: np.ndarray, rng: RNG, *, quality: Range = (20.0, 90.0), bgr: bool = False) -> np.ndarray:
    return jpeg_compress(img, sample_range(quality, rng, integer=True), bgr=bgr)


# ------------------------------------------------------------ out-of-distribution noises (Table 6)
def poisson_noise(img: np.ndarray, strength: float, rng: RNG | int | None = None) -> np.ndarray:
    """Signal-dependent shot noise: on the 0-255 scale the variance is ``strength * value``.

    ``strength = 1`` treats every 8-bit level as one photon; larger is noisier.
    """
    img = _check_image(img)
    rng = as_rng(rng)
    if strength <= 0:
        return img.astype(np.float32, copy=True)
    lam = np.clip(img, 0, 1).astype(np.float64) * (255.0 / strength)
    out = rng.poisson(lam) * (strength / 255.0)
    return np.clip(out, 0, 1).astype(np.float32)


def speckle_noise(img: np.ndarray, strength: float, rng: RNG | int | None = None) -> np.ndarray:
    """Multiplicative Gaussian noise ``img * (1 + N(0, strength))``, clipped to [0, 1]."""
    img = _check_image(img)
    rng = as_rng(rng)
    out = img * (1.0 + rng.normal(0.0, float(strength), img.shape))
    return np.clip(out, 0, 1).astype(np.float32)


def salt_and_pepper(img: np.ndarray, strength: float, rng: RNG | int | None = None) -> np.ndarray:
    """Impulse noise: a fraction ``strength`` of the pixels (all channels) set to 0 or 1, half each."""
    img = _check_image(img)
    rng = as_rng(rng)
    out = img.astype(np.float32, copy=True)
    u = rng.random(img.shape[:2])
    out[u < strength / 2] = 0.0
    out[(u >= strength / 2) & (u < strength)] = 1.0
    return out


OOD_NOISES = {"poisson": poisson_noise, "speckle": speckle_noise, "salt_pepper": salt_and_pepper}


# ------------------------------------------------------------------------------------ test time
# Test settings of the paper (RAM_SPEC §7); the out-of-distribution strengths are ramir's choice.
TEST_LEVELS: dict[str, tuple[float, ...]] = {
    "noise": (15.0, 25.0, 50.0),
    "blur": (2.0,),
    "jpeg": (50.0,),
    "poisson": (1.0, 4.0),
    "speckle": (0.1, 0.2),
    "salt_pepper": (0.01, 0.05),
}


def degrade_for_test(
    img: np.ndarray, kind: str, level: float | None = None, seed: int = 0, *, bgr: bool = False
) -> np.ndarray:
    """A deterministic degradation for evaluation: the same (image, kind, level, seed) -> the same output.

    ``level`` defaults to the first of :data:`TEST_LEVELS[kind]` for blur/JPEG (2.0, 50) and is
    required otherwise. Gaussian noise uses the legacy ``RandomState(seed)``, i.e. the reference's
    ``np.random.seed(seed)`` before degrading; the other random noises use ``default_rng(seed)``.
    """
    if kind not in TEST_LEVELS:
        raise ConfigError(f"unknown test degradation {kind!r}; choose from {', '.join(TEST_LEVELS)}")
    if level is None:
        if kind not in ("blur", "jpeg"):
            raise ConfigError(f"test degradation {kind!r} needs a level, e.g. {TEST_LEVELS[kind]}")
        level = TEST_LEVELS[kind][0]
    if kind == "noise":
        return add_gaussian_noise(img, level, np.random.RandomState(seed), bgr=bgr)
    if kind == "blur":
        return gaussian_blur(img, level)
    if kind == "jpeg":
        return jpeg_compress(img, level, bgr=bgr)
    fn = OOD_NOISES[kind]
    return fn(img, level, np.random.default_rng(seed))


__all__ = [
    "OOD_NOISES",
    "PAPER_RANGES",
    "PRESETS",
    "REFERENCE_RANGES",
    "RNG",
    "TEST_LEVELS",
    "Choice",
    "Range",
    "add_gaussian_noise",
    "as_rng",
    "degrade_for_test",
    "gaussian_blur",
    "gaussian_kernel2d",
    "jpeg_compress",
    "parse_range",
    "poisson_noise",
    "quantize",
    "random_blur",
    "random_jpeg",
    "random_noise",
    "salt_and_pepper",
    "sample_range",
    "speckle_noise",
    "to_uint8_round",
]
