"""Metrics against the reference implementation's numbers (fixtures README §3.4) and basic properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_json, within
from ramir import metrics

# 4x (float64: 100x) the largest error under torch's default, AVX2 and AVX-512 kernels on 1 and 2 threads
# (docs/robustness.md): the reference's protocol 3.18e-7 and scikit-image's 7.11e-15 (float64) at every
# setting (numpy / OpenCV, which ATEN_CPU_CAPABILITY does not switch), the torch PSNR 1.99e-6 dB
ABS_TOL = 1.3e-6
SKIMAGE_ABS = 7.2e-13
TORCH_PSNR_ABS = 8e-6


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(FIXTURES / "metrics_images.safetensors"))


def _pairs(images):
    clean = images["clean_bgr_u8"]
    for pair in load_json("metrics.json")["pairs"]:
        yield pair, images[f"noisy{pair['pair']}_bgr_u8"], clean


@pytest.mark.golden
def test_reference_protocol_matches_fixtures(images):
    worst = 0.0
    for pair, noisy, clean in _pairs(images):
        got = {
            "official_psnr_crop4_rgb": metrics.psnr(noisy, clean),
            "official_ssim_crop4_rgb": metrics.ssim(noisy, clean),
            "official_psnr_crop0_rgb": metrics.psnr(noisy, clean, crop_border=0),
            "official_ssim_crop0_rgb": metrics.ssim(noisy, clean, crop_border=0),
            # the fixture images are BGR, as the reference hands them to its metric
            "official_psnr_crop4_y": metrics.psnr(noisy, clean, test_y_channel=True, channel_order="bgr"),
            "official_ssim_crop4_y": metrics.ssim(noisy, clean, test_y_channel=True, channel_order="bgr"),
            "official_ssim_crop4_rgb_swapped_args": metrics.ssim(clean, noisy),
        }
        worst = max(worst, *(abs(value - pair[key]) for key, value in got.items()))
    within("metrics: the reference's PSNR/SSIM protocol vs golden (dB / SSIM units)", worst, ABS_TOL)


def test_y_channel_depends_on_channel_order(images):
    _, noisy, clean = next(_pairs(images))
    bgr = metrics.psnr(noisy, clean, test_y_channel=True, channel_order="bgr")
    rgb = metrics.psnr(noisy[..., ::-1], clean[..., ::-1], test_y_channel=True, channel_order="rgb")
    assert rgb == pytest.approx(bgr, abs=1e-12)
    wrong = metrics.psnr(noisy, clean, test_y_channel=True, channel_order="rgb")
    assert abs(wrong - bgr) > 1e-3
    # per-channel metrics ignore the order
    assert metrics.ssim(noisy[..., ::-1], clean[..., ::-1]) == pytest.approx(metrics.ssim(noisy, clean))


@pytest.mark.golden
def test_skimage_protocol_matches_fixtures(images):
    worst = 0.0
    for pair, noisy, clean in _pairs(images):
        n32, c32 = noisy.astype(np.float32) / 255, clean.astype(np.float32) / 255
        n64, c64 = noisy / 255.0, clean / 255.0
        # float32 inputs are measured in float32, as PromptIR does with its tensors
        got = {"skimage_psnr_dr1_nocrop": metrics.psnr_skimage(n32, c32),
               "skimage_ssim_dr1_nocrop": metrics.ssim_skimage(n32, c32),
               "skimage_psnr_dr1_nocrop_float64": metrics.psnr_skimage(n64, c64),
               "skimage_ssim_dr1_nocrop_float64": metrics.ssim_skimage(n64, c64)}
        worst = max(worst, *(abs(value - pair[key]) for key, value in got.items()))
        # uint8 input means float64 /255; crop 0 reference PSNR equals it exactly (README §3.4)
        assert metrics.psnr_skimage(noisy, clean) == pytest.approx(pair["skimage_psnr_dr1_nocrop_float64"])
        assert metrics.psnr(noisy, clean, crop_border=0) == pytest.approx(metrics.psnr_skimage(n64, c64))
    within("metrics: scikit-image's protocol vs golden (dB / SSIM units)", worst, SKIMAGE_ABS)


@pytest.mark.golden
def test_psnr_tensor_matches_reference_torch_variant(images):
    batch_a, batch_b, expected = [], [], []
    for pair, noisy, clean in _pairs(images):
        batch_a.append(torch.from_numpy(noisy).permute(2, 0, 1).float() / 255)
        batch_b.append(torch.from_numpy(clean).permute(2, 0, 1).float() / 255)
        expected.append(pair["official_psnr_pt_crop4_rgb"])
    a, b = torch.stack(batch_a), torch.stack(batch_b)
    # float32 reductions: a few ulps of the MSE
    worst = max(abs(float(metrics.psnr_tensor(a, b, crop_border=4)) - np.mean(expected)),
                abs(float(metrics.psnr_tensor(a[1], b[1], crop_border=4)) - expected[1]))
    within("metrics: torch PSNR vs golden (dB)", worst, TORCH_PSNR_ABS)
    assert float(metrics.psnr_tensor(b, b)) == pytest.approx(80.0)


def test_identical_and_different_images():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert metrics.psnr(img, img) == float("inf")
    assert metrics.ssim(img, img) == pytest.approx(1.0)
    assert metrics.ssim_skimage(img, img) == pytest.approx(1.0)
    other = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    assert 15 < metrics.psnr(other, img) < 40
    assert 0 < metrics.ssim(other, img) < 1
    # grey images: HW accepted, Y channel is not
    assert metrics.psnr(other[..., 0], img[..., 0]) > 0
    with pytest.raises(ValueError):
        metrics.psnr(other[..., 0], img[..., 0], test_y_channel=True)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.ssim(img, img[:-1])
    with pytest.raises(ValueError, match="11x11"):
        metrics.ssim(img[:16, :16], img[:16, :16])


def test_quantize_rounds_and_clips():
    x = np.array([[[-0.1, 0.4 / 255, 0.6 / 255]], [[0.999, 1.2, 254.4 / 255]]])
    assert metrics.quantize_u8(x).tolist() == [[[0, 0, 1]], [[255, 255, 254]]]
