"""PSNR and SSIM under the two protocols that restoration papers mix up.

* **Reference protocol** (RAM's BasicSR code, the paper's tables): uint8 HWC images (0-255), every
  channel of the colour image, ``crop_border=4`` pixels dropped on each side, float64 arithmetic.
  SSIM uses an 11x11 Gaussian window (sigma 1.5), keeps only the 'valid' part of the filtered maps and
  averages the per-channel SSIMs. ``test_y_channel=True`` measures the BT.601 luma instead.
  Functions: :func:`psnr`, :func:`ssim`.
* **PromptIR protocol** (PromptIR, AdaIR and most all-in-one papers): scikit-image's
  ``peak_signal_noise_ratio`` / ``structural_similarity`` on [0,1] float images, ``data_range=1``,
  no crop (SSIM: 7x7 uniform window, sample covariance). Functions: :func:`psnr_skimage`,
  :func:`ssim_skimage`.

The two disagree by up to several SSIM points on the same pair, so every reported number names its
protocol (see :data:`PROTOCOLS`). :func:`psnr_tensor` is a cheap torch PSNR for validation during training.

Channel order: the per-channel metrics do not depend on it. It matters only for the Y channel, where
``channel_order`` says whether the last axis is RGB (ramir's convention, the default) or BGR (what the
reference code hands its metric after ``tensor2img``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ChannelOrder = Literal["rgb", "bgr"]

# ITU-R BT.601 luma of the 'studio swing' YCbCr (Y in [16, 235] for 0-255 input), RGB weights.
_Y_WEIGHTS_RGB = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_OFFSET = 16.0

PROTOCOLS: dict[str, str] = {
    "reference": (
        "BasicSR/RAM: uint8 RGB, crop_border=4, all 3 channels, float64; "
        "SSIM 11x11 Gaussian window sigma 1.5, valid region, mean over channels"
    ),
    "skimage": (
        "PromptIR/AdaIR: skimage.metrics on [0,1] floats, data_range=1, no crop; "
        "SSIM 7x7 uniform window, channel_axis=-1"
    ),
}


def _check_pair(img: np.ndarray, ref: np.ndarray) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HW or HWC image, got shape {img.shape}")


def _prepare(
    img: np.ndarray, crop_border: int, test_y_channel: bool, channel_order: ChannelOrder
) -> np.ndarray:
    """uint8-range HWC -> float64 HWC (or HW1 luma), border cropped."""
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if crop_border:
        x = x[crop_border:-crop_border, crop_border:-crop_border, :]
    if test_y_channel:
        x = rgb_to_y(x, channel_order=channel_order)[..., None]
    return x


def rgb_to_y(img255: np.ndarray, channel_order: ChannelOrder = "rgb") -> np.ndarray:
    """BT.601 luma Y (16-235) of a 0-255 colour image; the 'ycbcr' conversion of MATLAB and BasicSR."""
    if img255.ndim != 3 or img255.shape[-1] != 3:
        raise ValueError(f"Y channel needs an HWC colour image, got shape {img255.shape}")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    weights = _Y_WEIGHTS_RGB if channel_order == "rgb" else _Y_WEIGHTS_RGB[::-1]
    return np.asarray(img255, dtype=np.float64) @ weights + _Y_OFFSET


def psnr(
    img: np.ndarray,
    ref: np.ndarray,
    crop_border: int = 4,
    test_y_channel: bool = False,
    channel_order: ChannelOrder = "rgb",
) -> float:
    """Reference-protocol PSNR (dB) of two uint8-range HWC images; ``inf`` when they are identical."""
    _check_pair(img, ref)
    a = _prepare(img, crop_border, test_y_channel, channel_order)
    b = _prepare(ref, crop_border, test_y_channel, channel_order)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    import cv2

    k = cv2.getGaussianKernel(size, sigma)  # float64 column, sums to 1
    return k @ k.T


def _ssim_plane(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> float:
    """SSIM of one float64 0-255 plane: Wang et al. 2004 with Gaussian-weighted local statistics."""
    import cv2

    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    r = window.shape[0] // 2

    def local_mean(x: np.ndarray) -> np.ndarray:
        # 'valid' part only: the border handling of filter2D never reaches the kept pixels
        return cv2.filter2D(x, -1, window)[r:-r, r:-r]

    mu_a, mu_b = local_mean(a), local_mean(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = local_mean(a * a) - mu_aa
    var_b = local_mean(b * b) - mu_bb
    cov = local_mean(a * b) - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(
    img: np.ndarray,
    ref: np.ndarray,
    crop_border: int = 4,
    test_y_channel: bool = False,
    channel_order: ChannelOrder = "rgb",
) -> float:
    """Reference-protocol SSIM of two uint8-range HWC images: per-channel Gaussian SSIM, then the mean."""
    _check_pair(img, ref)
    a = _prepare(img, crop_border, test_y_channel, channel_order)
    b = _prepare(ref, crop_border, test_y_channel, channel_order)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[:2]}")
    window = _gaussian_window()
    return float(np.mean([_ssim_plane(a[..., c], b[..., c], window) for c in range(a.shape[2])]))


def _as_float01(img: np.ndarray) -> np.ndarray:
    """uint8 -> float64 /255; float arrays keep their precision (PromptIR measures float32 tensors)."""
    x = np.asarray(img)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected a float image in [0,1] or uint8, got dtype {x.dtype}")
    return x


def psnr_skimage(img01: np.ndarray, ref01: np.ndarray) -> float:
    """PromptIR-protocol PSNR: ``skimage.metrics.peak_signal_noise_ratio(ref, img, data_range=1)``."""
    from skimage.metrics import peak_signal_noise_ratio

    _check_pair(img01, ref01)
    return float(peak_signal_noise_ratio(_as_float01(ref01), _as_float01(img01), data_range=1))


def ssim_skimage(img01: np.ndarray, ref01: np.ndarray) -> float:
    """PromptIR-protocol SSIM: skimage ``structural_similarity(..., data_range=1, channel_axis=-1)``."""
    from skimage.metrics import structural_similarity

    _check_pair(img01, ref01)
    a, b = _as_float01(ref01), _as_float01(img01)
    channel_axis = -1 if a.ndim == 3 else None
    return float(structural_similarity(a, b, data_range=1, channel_axis=channel_axis))


def psnr_tensor(a01, b01, crop_border: int = 0):
    """Mean PSNR (dB) over a batch of NCHW [0,1] tensors: the cheap check used during training.

    Computed on the float values (no uint8 quantisation), with 1e-8 added to the MSE so identical images
    give a finite 80 dB instead of ``inf``. Returns a 0-d tensor.
    """
    import torch

    if a01.shape != b01.shape:
        raise ValueError(f"tensor shapes differ: {tuple(a01.shape)} vs {tuple(b01.shape)}")
    if a01.ndim == 3:
        a01, b01 = a01.unsqueeze(0), b01.unsqueeze(0)
    if crop_border:
        a01 = a01[..., crop_border:-crop_border, crop_border:-crop_border]
        b01 = b01[..., crop_border:-crop_border, crop_border:-crop_border]
    mse = ((a01.float() - b01.float()) ** 2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(1.0 / (mse + 1e-8))).mean()


def quantize_u8(img01: np.ndarray) -> np.ndarray:
    """[0,1] float -> uint8 by rounding, as the reference's ``tensor2img`` does before measuring."""
    return np.clip(np.rint(np.asarray(img01, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- visible-artefact measures
def lattice_energy(img01: np.ndarray, flat_mask_from: np.ndarray, *, period: int = 8, tile: int = 64,
                   flatness: float = 0.02) -> float:
    """How much a regular grid of ``period`` px stands out in the flat parts of an image.

    The image's luma is cut into ``tile`` x ``tile`` tiles; only tiles where ``flat_mask_from`` (the clean
    photo) is flat count (mean gradient magnitude below ``flatness``: skies, walls), where a person sees a
    grid. In each, the Hann-windowed power spectrum at the grid's lattice frequencies (multiples of
    1/``period`` cycle/px, DC excluded) is divided by the mean power at the other frequencies of the same
    band (at least 1/``period``): about 1-3 for natural content, far more when a grid is printed over it.
    The mean over tiles; NaN when no tile is flat. Compare an output with its clean photo
    (:func:`grid_ratio`): a JPEG-compressed source already carries a faint 8-px lattice."""
    g = np.asarray(img01, dtype=np.float64)
    c = np.asarray(flat_mask_from, dtype=np.float64)
    g = g.mean(-1) if g.ndim == 3 else g
    c = c.mean(-1) if c.ndim == 3 else c
    if tile % period:
        raise ValueError(f"tile {tile} must be a multiple of period {period}")
    window = np.outer(np.hanning(tile), np.hanning(tile))
    f = np.abs(np.fft.fftfreq(tile))
    band = np.maximum(f[:, None], f[None, :]) >= 1.0 / period - 1e-9
    lattice = np.zeros((tile, tile), dtype=bool)
    lattice[:: tile // period, :: tile // period] = True
    lattice[0, 0] = False
    on, off = lattice & band, ~lattice & band
    ratios = []
    for y in range(0, g.shape[0] - tile + 1, tile):
        for x in range(0, g.shape[1] - tile + 1, tile):
            gy, gx = np.gradient(c[y : y + tile, x : x + tile])
            if np.hypot(gx, gy).mean() > flatness:
                continue
            t = g[y : y + tile, x : x + tile]
            power = np.abs(np.fft.fft2((t - t.mean()) * window)) ** 2
            ratios.append(power[on].mean() / (power[off].mean() + 1e-20))
    return float(np.mean(ratios)) if ratios else float("nan")


def grid_ratio(output01: np.ndarray, clean01: np.ndarray, **kwargs) -> float:
    """:func:`lattice_energy` of ``output01`` over that of the clean photo: 1 = no more grid than the
    photo had; the target for a restoration is at most 1.1."""
    return lattice_energy(output01, clean01, **kwargs) / lattice_energy(clean01, clean01, **kwargs)


def to_lab(img01: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an sRGB image in [0, 1], clipped and in float64: the colour space of
    :func:`colour_error`, shared so that a benchmark converting once per image measures the same thing."""
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(np.asarray(img01, dtype=np.float64), 0, 1))


def colour_error(img01: np.ndarray, ref01: np.ndarray, *, lightness: bool = True) -> float:
    """Mean CIEDE2000 colour difference to the reference (sRGB -> CIELAB, D65): 1 is about a just
    noticeable difference; washed-out or colour-cast results score high even when PSNR looks fine.

    ``lightness=False`` gives the chromatic part alone: the image's L* is replaced by the reference's
    before the difference is taken, so that only hue and chroma count. Why: after low light the error
    is mostly brightness, which a blind restorer cannot know exactly (the exposure is unknown), and the
    two parts call for different remedies."""
    from skimage.color import deltaE_ciede2000

    a, b = to_lab(img01), to_lab(ref01)
    if not lightness:
        a[..., 0] = b[..., 0]
    return float(deltaE_ciede2000(a, b).mean())
