"""Synthetic haze, rain, low light and motion blur, so that RAM can be trained from clean photos only.

RAM's real training pairs (RESIDE OTS, Rain13k, LOL-v2, GoPro) are not always at hand; these models
make plausible stand-ins from any clean image. Every ``random_*`` function draws its parameters from
configurable ranges (:data:`ramir.data.degradations.Range`) with the caller's Generator, so a seeded
Generator gives a reproducible result. Images are HWC float32 RGB in [0, 1]; outputs stay in [0, 1].

- Haze: the atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)``, with a smooth
  depth-like map ``d`` (a random low-frequency field blended with a vertical gradient: far at the top).
- Rain: a streak layer (sparse random drops, thickened, motion-blurred along one angle) screen-blended
  onto the image, ``1 - (1 - I)(1 - R)``, as whitish semi-transparent streaks look.
- Low light: exposure drop and gamma in linear light, Poisson-Gaussian sensor noise, 8-bit quantisation.
- Motion blur: convolution with a random camera-shake kernel or a real (Levin 2009) kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ramir.data.degradations import Range, quantize, sample_range
from ramir.data.kernels import apply_kernel, augment_kernel, trajectory_kernel


# ------------------------------------------------------------------------------------------ haze
def smooth_field(height: int, width: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1]: ``cells x cells`` uniform values upsampled bicubically."""
    aspect = width / max(height, 1)
    gh, gw = max(2, cells), max(2, round(cells * aspect))
    grid = rng.random((gh + 2, gw + 2)).astype(np.float32)  # a margin keeps the borders as smooth
    big = cv2.resize(
        grid, (width + 2 * width // gw, height + 2 * height // gh), interpolation=cv2.INTER_CUBIC
    )
    oy, ox = height // gh, width // gw
    field = big[oy : oy + height, ox : ox + width]
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo) if hi > lo else np.zeros_like(field)


def depth_map(
    height: int, width: int, rng: np.random.Generator, *, gradient: float = 0.6, near: float = 0.2
) -> np.ndarray:
    """A depth-like map in [near, 1]: ``gradient`` of it a top-to-bottom ramp (sky far), the rest random."""
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    d = gradient * ramp + (1.0 - gradient) * smooth_field(height, width, rng)
    lo, hi = float(d.min()), float(d.max())
    d = (d - lo) / (hi - lo) if hi > lo else np.full_like(d, 0.5)
    return (near + (1.0 - near) * d).astype(np.float32)


def add_haze(
    img: np.ndarray, depth: np.ndarray, beta: float, airlight: float | Sequence[float]
) -> np.ndarray:
    """Atmospheric scattering: ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta * depth)``."""
    t = np.exp(-float(beta) * depth.astype(np.float32))[..., None]
    a = np.asarray(airlight, dtype=np.float32).reshape(1, 1, -1)
    return np.clip(img * t + a * (1.0 - t), 0, 1).astype(np.float32)


def random_haze(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    beta: Range = (0.6, 2.2),
    airlight: Range = (0.7, 0.95),
    tint: Range = (0.0, 0.04),
    gradient: Range = (0.5, 0.9),
    near: Range = (0.05, 0.35),
) -> np.ndarray:
    """Haze of random thickness ``beta`` and grey-white airlight ``A``, slightly ``tint``-ed per channel."""
    h, w = img.shape[:2]
    d = depth_map(h, w, rng, gradient=sample_range(gradient, rng), near=sample_range(near, rng))
    a = sample_range(airlight, rng)
    shift = sample_range(tint, rng) * rng.uniform(-1.0, 1.0, 3)
    return add_haze(img, d, sample_range(beta, rng), np.clip(a + shift, 0, 1))


# ------------------------------------------------------------------------------------------ rain
def line_kernel(length: float, angle_deg: float, width: int = 1, *, taper: bool = True) -> np.ndarray:
    """A normalised anti-aliased line of ``length`` px through the centre, ``angle_deg`` from vertical;
    ``taper`` weights it towards the middle (a falling drop), off it is uniform (straight motion)."""
    size = math.ceil(length) | 1
    c = size // 2
    theta = math.radians(angle_deg)
    dx, dy = math.sin(theta) * (length - 1) / 2, math.cos(theta) * (length - 1) / 2
    k = np.zeros((size, size), dtype=np.float32)
    shift = 4  # sub-pixel precision of cv2.line
    p0 = (round((c - dx) * 16), round((c - dy) * 16))
    p1 = (round((c + dx) * 16), round((c + dy) * 16))
    cv2.line(k, p0, p1, 1.0, thickness=max(1, int(width)), lineType=cv2.LINE_AA, shift=shift)
    if taper:  # both ends fade (a falling drop is brightest mid-streak): weight by a cosine along the line
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - c
        along = (xx * math.sin(theta) + yy * math.cos(theta)) / max((length - 1) / 2, 0.5)
        k *= np.sqrt(np.clip(np.cos(np.clip(along, -1, 1) * (math.pi / 2)), 0, 1))
    return k / k.sum()


def rain_layer(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    density: float,
    length: float,
    angle: float,
    thickness: float,
    brightness: float,
) -> np.ndarray:
    """A (H, W) streak layer in [0, 1]: sparse drops, thickened by a Gaussian, smeared along ``angle``."""
    drops = (rng.random((height, width)) < density).astype(np.float32)
    drops *= rng.uniform(0.4, 1.0, (height, width)).astype(np.float32)  # drops differ in brightness
    if thickness > 0.05:  # widen the drops; rescale so that a lone drop keeps its peak level
        g = cv2.getGaussianKernel(round(8 * thickness + 1) | 1, float(thickness)).astype(np.float32)
        drops = cv2.sepFilter2D(drops, -1, g, g, borderType=cv2.BORDER_REFLECT_101) / float(g.max()) ** 2
    streaks = cv2.filter2D(drops, -1, line_kernel(length, angle), borderType=cv2.BORDER_REFLECT_101)
    streaks *= max(length, 1.0)  # a lone streak has value drop/length along it: back to the drop's level
    return np.clip(streaks * brightness, 0, 1)


def add_rain(img: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Screen blend: ``1 - (1 - I)(1 - R)`` (light streaks over the scene, never darker)."""
    r = layer[..., None] if img.ndim == 3 else layer
    return (1.0 - (1.0 - img) * (1.0 - r)).astype(np.float32)


def random_rain(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    density: Range = (0.002, 0.015),
    length: Range = (10.0, 35.0),
    angle: Range = (-25.0, 25.0),
    thickness: Range = (0.0, 0.7),
    brightness: Range = (0.25, 0.75),
    blur: Range = (0.0, 0.7),
) -> np.ndarray:
    """Rain streaks of random density, length, angle, thickness and brightness; ``blur`` softens the layer."""
    h, w = img.shape[:2]
    layer = rain_layer(
        h,
        w,
        rng,
        density=sample_range(density, rng),
        length=sample_range(length, rng),
        angle=sample_range(angle, rng),
        thickness=sample_range(thickness, rng),
        brightness=sample_range(brightness, rng),
    )
    s = sample_range(blur, rng)
    if s > 0.05:
        layer = cv2.GaussianBlur(layer, (0, 0), s, borderType=cv2.BORDER_REFLECT_101)
    return add_rain(img, layer)


# ------------------------------------------------------------------------------------- low light
def low_light(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    exposure: float,
    gamma: float,
    photons: float,
    read_noise: float,
) -> np.ndarray:
    """Dark, noisy, quantised version of ``img``.

    In linear light (``img ** 2.2``) the exposure drops by ``exposure``; ``gamma`` > 1 darkens the
    shadows further (a crushed tone curve). Sensor noise: Poisson with ``photons`` electrons at full
    scale plus Gaussian read noise (std ``read_noise`` of full scale); then back to sRGB-like gamma
    and 8-bit quantisation, where the darkest levels lose most, as in real low-light captures.
    """
    lin = np.clip(img, 0, 1).astype(np.float32) ** 2.2
    dark = float(exposure) * lin ** float(gamma)
    electrons = rng.poisson(dark * float(photons)).astype(np.float32)
    noisy = electrons / float(photons) + rng.normal(0.0, float(read_noise), img.shape).astype(np.float32)
    out = np.clip(noisy, 0, 1) ** (1 / 2.2)
    return quantize(out)


def random_low_light(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    exposure: Range = (0.01, 0.1),
    gamma: Range = (1.0, 1.4),
    photons: Range = (1000.0, 10000.0),
    read_noise: Range = (0.0002, 0.002),
) -> np.ndarray:
    return low_light(
        img,
        rng,
        exposure=sample_range(exposure, rng),
        gamma=sample_range(gamma, rng),
        photons=sample_range(photons, rng),
        read_noise=sample_range(read_noise, rng),
    )


# ----------------------------------------------------------------------------------- motion blur
def random_motion_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    length: Range = (5.0, 25.0),
    kernels: Sequence[np.ndarray] | None = None,
    inertia: Range = 0.7,
    shake: Range = 0.6,
) -> np.ndarray:
    """Blur with a random camera-shake kernel of path ``length`` px, or, if ``kernels`` is given,
    with one of them picked at random and randomly rotated/flipped (e.g. the 8 Levin kernels). ``inertia``
    and ``shake`` shape the random path (straighter or more erratic; see ``trajectory_kernel``)."""
    if kernels:
        kernel = augment_kernel(kernels[int(rng.integers(len(kernels)))], rng)
    else:
        path_length = sample_range(length, rng)
        kernel = trajectory_kernel(
            rng, path_length, inertia=sample_range(inertia, rng), shake=sample_range(shake, rng)
        )
    return np.clip(apply_kernel(img, kernel), 0, 1)


__all__ = [
    "add_haze",
    "add_rain",
    "depth_map",
    "line_kernel",
    "low_light",
    "rain_layer",
    "random_haze",
    "random_low_light",
    "random_motion_blur",
    "random_rain",
    "smooth_field",
]
