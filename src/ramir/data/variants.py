"""Variants of the familiar degradation families, so that experts learn the family and not one synthesiser.

Each ``random_*`` draw takes HWC float32 RGB in [0, 1] and a Generator (reproducible with a seeded one).
Some are for training (broader synthesis), some are kept for the *unseen-variant* validation split, which
no training recipe may draw from (``configs/eval/validation_unseen.yaml`` says which); the split of
roles is a recipe choice, not a property of the code.

- Blur: anisotropic Gaussians, defocus discs, generalised-Gaussian (heavy-tail / plateau) kernels.
- Camera shake: the Boracchi & Foi (2012) trajectory model with partial exposure; straight-line motion.
- Noise: Poisson-Gaussian (signal-dependent), channel-correlated, and an in-camera pipeline (Bayer mosaic,
  sensor noise, demosaicking, white balance, gamma, JPEG) in the manner of CBDNet; spatially correlated;
  random-valued impulses.
- JPEG: double compression on shifted grids, chroma subsampling on or off.
- Haze: coloured airlight (smog, dusk); low light: colour casts.
- Scale: :func:`zoom` enlarges the centre back to the full size, so that a small photo has the
  pixel-level softness of a multi-megapixel one (a ``base`` of a recipe or an evaluation task: the
  enlarged photo is the target).
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image

from ramir.data.degradations import Range, jpeg_compress, quantize, sample_range
from ramir.data.kernels import (
    apply_kernel,
    defocus_kernel,
    generalized_gaussian_kernel,
    shake_trajectory_kernel,
)
from ramir.data.synthetic import add_haze, depth_map, line_kernel, low_light


# ------------------------------------------------------------------------------------------- blur
def random_aniso_blur(
    img: np.ndarray, rng: np.random.Generator, *, sigma: Range = (0.3, 3.5), ratio: Range = (0.25, 1.0)
) -> np.ndarray:
    """An oriented Gaussian: major axis ``sigma``, minor ``ratio * sigma``, random angle."""
    s = sample_range(sigma, rng)
    k = generalized_gaussian_kernel(s, s * sample_range(ratio, rng), rng.uniform(0, 180), 2.0)
    return np.clip(apply_kernel(img, k), 0, 1)


def random_defocus(img: np.ndarray, rng: np.random.Generator, *, radius: Range = (1.0, 6.0)) -> np.ndarray:
    """Out-of-focus blur: a disc of ``radius`` px."""
    return np.clip(apply_kernel(img, defocus_kernel(sample_range(radius, rng))), 0, 1)


def random_gg_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: Range = (1.0, 3.0),
    ratio: Range = (0.5, 1.0),
    beta: Range = (3.0, 5.0),
) -> np.ndarray:
    """A generalised-Gaussian kernel of shape ``beta`` (above 2: a plateau, below 2: heavy tails)."""
    s = sample_range(sigma, rng)
    shape = sample_range(beta, rng)
    k = generalized_gaussian_kernel(s, s * sample_range(ratio, rng), rng.uniform(0, 180), shape)
    return np.clip(apply_kernel(img, k), 0, 1)


def random_shake(
    img: np.ndarray, rng: np.random.Generator, *, length: Range = (15.0, 35.0), exposure: Range = (0.5, 1.0)
) -> np.ndarray:
    """Camera shake of the Boracchi & Foi trajectory model (path up to ``length`` px, ``exposure`` of it)."""
    k = shake_trajectory_kernel(rng, sample_range(length, rng), sample_range(exposure, rng))
    return np.clip(apply_kernel(img, k), 0, 1)


def random_linear_motion(
    img: np.ndarray, rng: np.random.Generator, *, length: Range = (5.0, 30.0)
) -> np.ndarray:
    """Straight, uniform motion of ``length`` px at a random angle (a panning or moving object)."""
    n = sample_range(length, rng)
    k = line_kernel(n, 90.0 - rng.uniform(0, 180), taper=False)  # the angle measured from horizontal
    return np.clip(apply_kernel(img, k), 0, 1)


# ------------------------------------------------------------------------------------------ noise
def random_poisson_gaussian(
    img: np.ndarray, rng: np.random.Generator, *, shot: Range = (0.0, 0.04), read: Range = (0.0, 0.04)
) -> np.ndarray:
    """Signal-dependent noise: variance ``shot^2 * x + read^2`` (heteroscedastic, as a sensor's)."""
    a, b = sample_range(shot, rng) ** 2, sample_range(read, rng) ** 2
    std = np.sqrt(a * np.clip(img, 0, 1) + b)
    return np.clip(img + rng.standard_normal(img.shape).astype(np.float32) * std, 0, 1).astype(np.float32)


def random_correlated_noise(
    img: np.ndarray, rng: np.random.Generator, *, sigma: Range = (5.0, 40.0), rho: Range = (0.3, 0.9)
) -> np.ndarray:
    """Gaussian noise of std ``sigma`` (0-255) whose three channels correlate by ``rho`` (luma-heavy)."""
    s, r = sample_range(sigma, rng) / 255.0, sample_range(rho, rng)
    cov = np.full((3, 3), r) + np.eye(3) * (1 - r)
    chol = np.linalg.cholesky(cov).astype(np.float32)
    n = rng.standard_normal(img.shape).astype(np.float32) @ chol.T
    return np.clip(img + s * n, 0, 1).astype(np.float32)


def random_spatial_noise(
    img: np.ndarray, rng: np.random.Generator, *, sigma: Range = (10.0, 30.0), spread: Range = (0.5, 1.0)
) -> np.ndarray:
    """Spatially correlated noise: white Gaussian noise blurred by ``spread`` px and rescaled to
    ``sigma`` (0-255), the grain of a camera's own demosaicking and denoising."""
    s, sp = sample_range(sigma, rng) / 255.0, sample_range(spread, rng)
    n = rng.standard_normal(img.shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sp, borderType=cv2.BORDER_REFLECT_101).reshape(img.shape)
    n /= max(float(n.std()), 1e-6)
    return np.clip(img + s * n, 0, 1).astype(np.float32)


def random_impulse(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    fraction: Range = (0.005, 0.12),
    mono: float = 0.5,
) -> np.ndarray:
    """Random-valued impulse noise (hot, dead and stuck sensor sites, bit errors): a ``fraction`` of the
    values replaced by uniform ones of any height. With probability ``mono`` a draw hits whole pixels
    with one grey value, otherwise each channel apart (coloured impulses). Salt and pepper, which sets
    whole pixels to exactly 0 or 1, is a different generator and is kept for the unseen-variant split."""
    f = sample_range(fraction, rng)
    out = img.astype(np.float32, copy=True)
    if rng.random() < mono:
        hit = rng.random(img.shape[:2]) < f
        out[hit] = rng.random((int(hit.sum()), 1)).astype(np.float32)
    else:
        hit = rng.random(img.shape) < f
        out[hit] = rng.random(int(hit.sum())).astype(np.float32)
    return out


def _mosaic(rgb: np.ndarray) -> np.ndarray:
    """An RGGB Bayer mosaic (one value per pixel) of an HWC image whose sides are even."""
    raw = np.empty(rgb.shape[:2], dtype=np.float32)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


def camera_pipeline_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    shot: float,
    read: float,
    wb: tuple[float, float],
    quality: float | None,
) -> np.ndarray:
    """Sensor noise through an in-camera pipeline (after CBDNet's model): sRGB -> linear -> inverse white
    balance -> RGGB mosaic -> Poisson-Gaussian noise -> bilinear demosaic -> white balance -> gamma ->
    8 bits -> optional JPEG. Noise thus ends up spatially and channel-correlated and tone-dependent."""
    h, w = img.shape[:2]
    he, we = h + (h % 2), w + (w % 2)
    x = np.pad(np.clip(img, 0, 1), ((0, he - h), (0, we - w), (0, 0)), mode="reflect")
    lin = x.astype(np.float32) ** 2.2
    gains = np.array([wb[0], 1.0, wb[1]], dtype=np.float32)
    raw = _mosaic(lin / gains)
    var = shot**2 * np.clip(raw, 0, 1) + read**2
    raw = np.clip(raw + rng.standard_normal(raw.shape).astype(np.float32) * np.sqrt(var), 0, 1)
    bayer = np.round(raw * 65535).astype(np.uint16)
    rgb = cv2.cvtColor(bayer, cv2.COLOR_BayerBG2RGB).astype(np.float32) / 65535  # RGGB in OpenCV's naming
    out = np.clip(rgb * gains, 0, 1) ** (1 / 2.2)
    out = quantize(out[:h, :w])
    if quality is not None:
        out = jpeg_compress(out, quality)
    return np.asarray(out, dtype=np.float32)


def random_camera_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    shot: Range = (0.01, 0.08),
    read: Range = (0.002, 0.02),
    quality: Range = (60.0, 95.0),
    jpeg: Range = 0.7,
) -> np.ndarray:
    """:func:`camera_pipeline_noise` with random sensor levels, white balance and (probability ``jpeg``)
    JPEG quality."""
    s, r = sample_range(shot, rng), sample_range(read, rng)
    wb = (float(rng.uniform(1.5, 2.5)), float(rng.uniform(1.2, 2.0)))
    q = sample_range(quality, rng, integer=True)
    use = rng.random() < sample_range(jpeg, rng)
    return camera_pipeline_noise(img, rng, shot=s, read=r, wb=wb, quality=q if use else None)


# ------------------------------------------------------------------------------------------- JPEG
def pil_jpeg(img: np.ndarray, quality: float, subsampling: int) -> np.ndarray:
    """JPEG through Pillow's encoder with chroma ``subsampling`` 0 (4:4:4), 1 (4:2:2) or 2 (4:2:0)."""
    u8 = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=round(quality), subsampling=int(subsampling))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0


def random_jpeg_variant(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    quality: Range = (10.0, 90.0),
    second: Range = (0.0, 0.0),
    shift: Range = (0.0, 7.0),
    subsampling: Range = (0.0, 2.0),
) -> np.ndarray:
    """JPEG of ``quality`` with random chroma ``subsampling``; with probability ``second`` compressed
    again at another quality on a grid shifted by up to ``shift`` px (a re-shared photo)."""
    sub = int(sample_range(subsampling, rng, integer=True))
    out = pil_jpeg(img, sample_range(quality, rng, integer=True), sub)
    if rng.random() < sample_range(second, rng):
        dy, dx = (int(sample_range(shift, rng, integer=True)) for _ in range(2))
        h, w = out.shape[:2]
        padded = np.pad(out, ((dy, 0), (dx, 0), (0, 0)), mode="reflect")
        out = pil_jpeg(padded, sample_range(quality, rng, integer=True), sub)[dy : dy + h, dx : dx + w]
    return np.ascontiguousarray(out, dtype=np.float32)


# -------------------------------------------------------------------------------------- haze, light
def random_colour_haze(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    beta: Range = (0.6, 2.0),
    airlight: Range = (0.6, 0.9),
    cast: Range = (0.05, 0.2),
) -> np.ndarray:
    """Haze whose airlight is coloured (yellow-brown smog, blue mist, dusk): hue random, strength ``cast``."""
    h, w = img.shape[:2]
    d = depth_map(h, w, rng, gradient=float(rng.uniform(0.3, 0.9)), near=float(rng.uniform(0.05, 0.35)))
    hue = rng.uniform(0, 2 * math.pi)
    tint = np.array([math.cos(hue), math.cos(hue - 2.094), math.cos(hue + 2.094)], dtype=np.float32)
    a = np.clip(sample_range(airlight, rng) + sample_range(cast, rng) * tint, 0, 1)
    return add_haze(img, d, sample_range(beta, rng), a)


def random_cast_low_light(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    exposure: Range = (0.02, 0.15),
    cast: Range = (0.1, 0.35),
    photons: Range = (1000.0, 10000.0),
) -> np.ndarray:
    """Low light under a coloured illuminant (tungsten, sodium, LED): channel gains in linear light
    departing by up to ``cast`` from white, then the exposure drop and sensor noise of
    :func:`ramir.data.synthetic.low_light`."""
    c = sample_range(cast, rng)
    gains = np.clip(1.0 + c * rng.uniform(-1, 1, 3), 0.3, 1.5).astype(np.float32)
    lin = np.clip(img, 0, 1) ** 2.2 * gains
    tinted = np.clip(lin / max(float(gains.max()), 1.0), 0, 1) ** (1 / 2.2)
    return low_light(
        tinted, rng, exposure=sample_range(exposure, rng), gamma=float(rng.uniform(1.0, 1.3)),
        photons=sample_range(photons, rng), read_noise=float(rng.uniform(0.0002, 0.002)),
    )


# ------------------------------------------------------------------------------------------ scale
def zoom(img: np.ndarray, scale: float, *, whole: bool = False) -> np.ndarray:
    """The centre 1/``scale`` of the image enlarged (bicubic) back to the image's size, or with
    ``whole`` the whole image enlarged ``scale`` times (a larger image: evaluation tasks only, since a
    training pair keeps its window's size).

    Why: the training photos (BSDS, 0.15 MP) were shrunk from camera images and are sharp at the pixel
    level, while a 5-9 MP photo is soft there (lens, demosaicking, in-camera denoising). Such photos,
    noisy, were taken for blurred ones; a zoomed photo is a stand-in with a known clean target."""
    if scale < 1.0:
        raise ValueError(f"zoom scale must be at least 1, got {scale:g}")
    h, w = img.shape[:2]
    if whole:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return np.clip(cv2.resize(img, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0).astype(np.float32)
    ch, cw = max(1, round(h / scale)), max(1, round(w / scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = cv2.resize(img[top : top + ch, left : left + cw], (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_zoom(
    img: np.ndarray, rng: np.random.Generator, *, scale: Range = (1.5, 3.5), whole: bool = False
) -> np.ndarray:
    """:func:`zoom` by a random ``scale``."""
    return zoom(img, sample_range(scale, rng), whole=bool(whole))
