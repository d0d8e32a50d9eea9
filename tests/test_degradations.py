"""Degradations: bit-exact reference noise/blur/JPEG (fixtures README §3.5), synthetic ones, kernels."""

from __future__ import annotations

import time

import cv2
import h5py
import numpy as np
import pytest

from conftest import load_tensors, within
from ramir.data import degradations as deg
from ramir.data import synthetic as syn
from ramir.data.kernels import apply_kernel, load_levin_kernels, normalize_kernel, trajectory_kernel
from ramir.data.online import DEGRADATIONS, build_degradation, degradation_options
from ramir.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def fx() -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_tensors("degradations.safetensors").items()}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural RGB image (skimage's bundled coffee cup), 128x128, float32 [0, 1]."""
    from skimage import data

    img = data.coffee()[100:228, 200:328]
    return (img.astype(np.float32) / 255).copy()


def u8(img: np.ndarray) -> np.ndarray:
    return np.rint(img * 255).astype(np.uint8)


# ------------------------------------------------------------------------------- reference fixtures
def test_noise_matches_reference_bit_exactly(fx):
    clean = fx["clean_bgr_f32"]
    out = deg.add_gaussian_noise(clean, 25, np.random.RandomState(0), bgr=True)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(u8(out), fx["noise_var25_seed0_bgr_u8"])
    # an RGB caller gets the same picture, channel-reversed
    rgb = deg.add_gaussian_noise(clean[..., ::-1].copy(), 25, np.random.RandomState(0))
    np.testing.assert_array_equal(u8(rgb)[..., ::-1], fx["noise_var25_seed0_bgr_u8"])
    # the legacy global RNG, exactly as the reference seeds it
    np.random.seed(0)
    glob = deg.add_gaussian_noise(clean, 25, np.random.mtrand._rand, bgr=True)
    np.testing.assert_array_equal(u8(glob), fx["noise_var25_seed0_bgr_u8"])


def test_noise_truncates_not_rounds(fx):
    clean = fx["clean_bgr_f32"]
    noise = np.random.RandomState(0).normal(0, 25, clean.shape)
    rounded = np.rint(np.clip(clean * np.float32(255) + noise, 0, 255)).astype(np.uint8)
    out = u8(deg.add_gaussian_noise(clean, 25, np.random.RandomState(0), bgr=True))
    assert (out != rounded).mean() > 0.3  # about half the pixels differ between the two casts


@pytest.mark.golden
def test_blur_matches_reference(fx):
    out = deg.gaussian_blur(fx["clean_bgr_f32"], 2.0)
    assert out.dtype == np.float32
    # measured 0 at every setting; OpenCV picks its own SIMD paths (ATEN_CPU_CAPABILITY does not switch
    # them), so a floor of 1e-6 (1/4000 of a grey level) stands for another CPU's
    within("degradations: Gaussian blur vs golden", float(np.abs(out - fx["blur_sigma2_bgr_f32"]).max()),
           1e-6)
    k = deg.gaussian_kernel2d(2.0, 15)
    np.testing.assert_allclose(k.sum(axis=0), fx["gaussian_kernel_15_sigma2_f64"], atol=1e-15)
    # not quantised: most values are off the 8-bit grid
    assert np.mean(np.abs(out * 255 - np.rint(out * 255)) > 1e-3) > 0.5


def test_jpeg_matches_reference(fx):
    out = deg.jpeg_compress(fx["clean_bgr_f32"], 50, bgr=True)
    np.testing.assert_array_equal(u8(out), fx["jpeg_q50_bgr_u8"])
    rgb = deg.jpeg_compress(fx["clean_bgr_f32"][..., ::-1].copy(), 50)
    np.testing.assert_array_equal(u8(rgb)[..., ::-1], fx["jpeg_q50_bgr_u8"])
    # treating BGR data as RGB gives a different result (the encoder's colour transform is not symmetric)
    assert not np.array_equal(u8(deg.jpeg_compress(fx["clean_bgr_f32"], 50)), fx["jpeg_q50_bgr_u8"])


def test_jpeg_rounds_float_input(fx):
    blurred = deg.gaussian_blur(fx["clean_bgr_f32"], 2.0)  # off the 8-bit grid
    out = deg.jpeg_compress(blurred, 50)
    np.testing.assert_array_equal(out, deg.jpeg_compress(np.rint(blurred * 255) / 255, 50))
    assert not np.array_equal(out, deg.jpeg_compress(np.floor(blurred * 255) / 255, 50))


def test_degrade_for_test_is_deterministic(fx, photo):
    clean = fx["clean_bgr_f32"]
    np.testing.assert_array_equal(
        u8(deg.degrade_for_test(clean, "noise", 25, seed=0, bgr=True)), fx["noise_var25_seed0_bgr_u8"]
    )
    assert np.abs(deg.degrade_for_test(clean, "blur") - fx["blur_sigma2_bgr_f32"]).max() <= 1e-6
    np.testing.assert_array_equal(u8(deg.degrade_for_test(clean, "jpeg", bgr=True)), fx["jpeg_q50_bgr_u8"])
    for kind in ("noise", "poisson", "speckle", "salt_pepper"):
        level = deg.TEST_LEVELS[kind][-1]
        a = deg.degrade_for_test(photo, kind, level, seed=3)
        np.testing.assert_array_equal(a, deg.degrade_for_test(photo, kind, level, seed=3))
        assert not np.array_equal(a, deg.degrade_for_test(photo, kind, level, seed=4))
    sigmas = [np.std(deg.degrade_for_test(photo, "noise", s) - photo) * 255 for s in (15, 25, 50)]
    assert sigmas[0] < sigmas[1] < sigmas[2]
    with pytest.raises(ConfigError):
        deg.degrade_for_test(photo, "noise")  # needs a level
    with pytest.raises(ConfigError):
        deg.degrade_for_test(photo, "fog", 1)


# -------------------------------------------------------------------------------------------- ranges
def test_ranges_and_presets():
    rng = np.random.default_rng(0)
    assert deg.parse_range(25) == 25.0
    assert deg.parse_range([0, 50]) == (0.0, 50.0)
    assert deg.parse_range({"choice": [15, 25]}) == deg.Choice((15.0, 25.0))
    for bad in ([50, 0], "x", [1, 2, 3], {"values": [1]}, True):
        with pytest.raises(ConfigError):
            deg.parse_range(bad)
    q = [deg.sample_range((20.0, 90.0), rng, integer=True) for _ in range(3000)]
    assert min(q) == 20 and max(q) == 90 and all(v == int(v) for v in q)
    ref = deg.REFERENCE_RANGES
    assert ref["noise"]["sigma"].values == tuple(float(v) for v in range(50))
    assert len(ref["blur"]["sigma"].values) == 11 and ref["blur"]["sigma"].values[0] == 2.0
    assert ref["jpeg"]["quality"].values[0] == 10 and ref["jpeg"]["quality"].values[-1] == 89
    s = [deg.sample_range(deg.PAPER_RANGES["blur"]["sigma"], rng) for _ in range(500)]
    assert 0.1 <= min(s) < 0.4 and 2.8 < max(s) <= 3.1


def test_build_degradation_validates_keys():
    d = build_degradation({"kind": "noise", "preset": "reference"})
    assert isinstance(d.params["sigma"], deg.Choice)
    assert build_degradation({"kind": "jpeg", "quality": 30}).params == {"quality": 30.0}
    for bad in (
        {"kind": "noise", "sigmaa": 3},
        {"kind": "fog"},
        {"sigma": 3},
        {"kind": "haze", "beta": [2, 1]},
        {"kind": "noise", "preset": "paperr"},
        {"kind": "blur", "kernel_size": 14},
        {"kind": "rain", "preset": "paper"},
    ):
        with pytest.raises(ConfigError):
            build_degradation(bad)
    assert build_degradation({"kind": "rain", "angle": [-40, -10]}).params["angle"] == (-40.0, -10.0)
    with pytest.raises(ConfigError):
        build_degradation({"kind": "noise", "sigma": [-5, 5]})
    assert set(degradation_options()["haze"]) == {"beta", "airlight", "tint", "gradient", "near"}


# --------------------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_every_kind_is_seeded_shape_preserving_and_fast(kind, photo, tmp_path):
    spec: dict = {"kind": kind}
    if kind == "rain_transfer":  # needs a bank of rainy/clean pairs: one pair of random streaks
        rng = np.random.default_rng(0)
        clean = rng.random((48, 64, 3)).astype(np.float32) * 0.5
        streaks = (rng.random((48, 64)) > 0.97).astype(np.float32) * 0.4
        for sub, img in (("input", clean + streaks[..., None]), ("target", clean)):
            (tmp_path / sub).mkdir()
            cv2.imwrite(str(tmp_path / sub / "1.png"), np.rint(img * 255).astype(np.uint8))
        spec["bank"] = str(tmp_path)
    if kind == "chain":  # a composite: its steps, shuffled and sometimes dropped (every branch drawn)
        spec.update(steps=[{"kind": "blur"}, {"kind": "noise"}, {"kind": "jpeg"}], shuffle=0.5, drop=0.3)
    d = build_degradation(spec)
    a = d(photo, np.random.default_rng(7))
    assert a.shape == photo.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, d(photo, np.random.default_rng(7)))
    if kind != "none":
        assert not np.array_equal(a, photo)
        assert not np.array_equal(a, d(photo, np.random.default_rng(8)))
    times = []
    for seed in range(5):
        t = time.perf_counter()
        d(photo, np.random.default_rng(seed))
        times.append(time.perf_counter() - t)
    assert np.median(times) < 0.1  # ~1-8 ms on one core; 100 ms only catches a per-pixel Python loop


def test_haze_brightens_and_lowers_contrast(photo):
    for seed in range(5):
        out = syn.random_haze(photo, np.random.default_rng(seed))
        assert out.mean() > photo.mean() + 0.05
        assert out.std() < photo.std() * 0.9
    d = syn.depth_map(64, 48, np.random.default_rng(0), gradient=1.0, near=0.2)
    assert d.shape == (64, 48) and abs(d.min() - 0.2) < 1e-6 and abs(d.max() - 1) < 1e-6
    assert np.all(np.diff(d[:, 0]) <= 1e-6)  # pure gradient: far (deep) at the top
    img = photo[:64, :48]
    np.testing.assert_allclose(syn.add_haze(img, d, 0.0, 0.9), img, atol=1e-7)  # beta 0: no haze
    thick = syn.add_haze(img, d, 50.0, 0.9)
    np.testing.assert_allclose(thick, 0.9, atol=1e-3)  # opaque haze: the airlight only


def test_rain_adds_light_streaks_along_the_angle(photo):
    out = syn.random_rain(photo, np.random.default_rng(0))
    assert np.all(out >= photo - 1e-6) and out.mean() > photo.mean()
    layer = syn.rain_layer(
        96, 96, np.random.default_rng(1), density=0.01, length=25, angle=0, thickness=0, brightness=0.8
    )
    vertical = np.abs(np.diff(layer, axis=0)).mean()
    horizontal = np.abs(np.diff(layer, axis=1)).mean()
    assert vertical < horizontal / 3  # vertical streaks: smooth down the columns
    k = syn.line_kernel(15, 30)
    assert abs(k.sum() - 1) < 1e-5 and k.shape == (15, 15)


def test_low_light_is_darker_noisy_and_quantised(photo):
    for seed in range(5):
        out = syn.random_low_light(photo, np.random.default_rng(seed))
        assert out.mean() < photo.mean() * 0.5
        np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-3)
    flat = np.full((64, 64, 3), 0.5, np.float32)
    quiet = syn.low_light(flat, np.random.default_rng(0), exposure=0.5, gamma=1, photons=1e7, read_noise=0)
    noisy = syn.low_light(flat, np.random.default_rng(0), exposure=0.5, gamma=1, photons=100, read_noise=0.01)
    assert quiet.std() < 0.003 < noisy.std()


def test_out_of_distribution_noises():
    rng = np.random.default_rng(0)
    flat = np.full((128, 128, 3), 0.5, np.float32)
    var = np.var(deg.poisson_noise(flat, 2.0, rng) * 255)
    assert 0.9 * 255 < var < 1.1 * 255  # variance = strength * 127.5 on the 0-255 scale
    np.testing.assert_array_equal(deg.poisson_noise(flat, 0, rng), flat)
    ratio = deg.speckle_noise(flat, 0.2, rng) / flat
    assert abs(ratio.std() - 0.2) < 0.01
    sp = deg.salt_and_pepper(flat, 0.1, rng)
    changed = np.any(sp != flat, axis=2)
    assert abs(changed.mean() - 0.1) < 0.01 and set(np.unique(sp[changed])) <= {0.0, 1.0}


def test_random_valued_impulses_are_of_any_height_and_not_salt_and_pepper():
    from ramir.data.variants import random_impulse

    flat = np.full((128, 128, 3), 0.5, np.float32)
    coloured = random_impulse(flat, np.random.default_rng(0), fraction=0.1, mono=0.0)
    hit = coloured != flat
    assert abs(hit.mean() - 0.1) < 0.01  # a fraction of the values, channel by channel
    assert hit.all(axis=2).mean() < 0.01  # rarely all three at once
    grey = random_impulse(flat, np.random.default_rng(0), fraction=0.1, mono=1.0)
    hit_px = np.any(grey != flat, axis=2)
    assert abs(hit_px.mean() - 0.1) < 0.01  # whole pixels ...
    px = grey[hit_px]
    np.testing.assert_array_equal(px[:, 0], px[:, 2])  # ... with one grey value
    for vals in (coloured[hit], px[:, 0]):  # of any height, where salt and pepper has only 0 and 1
        assert 0.3 < vals.mean() < 0.7 and np.mean((vals > 0.02) & (vals < 0.98)) > 0.9


# ------------------------------------------------------------------------------------------ kernels
def test_trajectory_kernels_are_normalised_and_grow_with_length():
    sizes = []
    for seed in range(10):
        for length in (5, 25):
            k = trajectory_kernel(np.random.default_rng(seed), length)
            assert k.dtype == np.float32 and k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
            assert abs(k.sum() - 1) < 1e-5 and k.min() >= 0
            sizes.append((length, np.count_nonzero(k > 1e-4)))
    short = np.mean([n for length, n in sizes if length == 5])
    long = np.mean([n for length, n in sizes if length == 25])
    assert long > 2.5 * short


def test_apply_kernel_is_a_convolution(photo):
    k = np.zeros((5, 5), np.float32)
    k[2, 4] = 1.0  # one pixel right of the centre: the image moves right by 2
    out = apply_kernel(photo, k)
    np.testing.assert_allclose(out[:, 4:], photo[:, 2:-2], atol=1e-6)
    flat = np.full((32, 32, 3), 0.3, np.float32)
    np.testing.assert_allclose(
        apply_kernel(flat, trajectory_kernel(np.random.default_rng(0), 15)), 0.3, atol=1e-5
    )


def write_mat_cell(path, kernels: list[np.ndarray], name: str = "kernels") -> None:
    """A MATLAB v7.3-like file: a cell array of column-major matrices stored as object references."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        ds = f.create_dataset(name, (len(kernels), 1), dtype=h5py.ref_dtype)
        for i, k in enumerate(kernels):
            ds[i, 0] = refs.create_dataset(chr(ord("b") + i), data=k.T).ref  # MATLAB writes column-major
        ds.attrs["MATLAB_class"] = np.bytes_(b"cell")


def test_levin_reader_on_a_small_hdf5_file(tmp_path):
    rng = np.random.default_rng(0)
    ks = [np.triu(rng.random((7, 7))), rng.random((9, 9)), rng.random((4, 6))]  # not symmetric
    write_mat_cell(tmp_path / "k.mat", ks)
    loaded = load_levin_kernels(tmp_path / "k.mat")
    assert len(loaded) == 3
    np.testing.assert_allclose(loaded[0], ks[0] / ks[0].sum(), rtol=1e-6)  # orientation kept
    np.testing.assert_allclose(loaded[1], ks[1] / ks[1].sum(), rtol=1e-6)
    assert loaded[2].shape == (7, 7) and abs(loaded[2].sum() - 1) < 1e-6  # padded to an odd square
    np.testing.assert_allclose(loaded[2][1:5, 0:6], ks[2] / ks[2].sum(), rtol=1e-6)
    with h5py.File(tmp_path / "n.mat", "w") as f:  # a numeric 3-D array (MATLAB 5x5x2)
        f.create_dataset("K", data=np.stack([ks[0][:5, :5].T, ks[1][:5, :5].T]))
    assert len(load_levin_kernels(tmp_path / "n.mat", variable="K")) == 2
    with pytest.raises(DataError, match="no variable"):
        load_levin_kernels(tmp_path / "k.mat", variable="psf")
    with pytest.raises(DataError, match="not found"):
        load_levin_kernels(tmp_path / "missing.mat")
    with pytest.raises(DataError):
        normalize_kernel(np.zeros((3, 3)))
    d = build_degradation({"kind": "motion", "kernels": "k.mat"}, base_dir=tmp_path)
    assert len(d.params["kernels"]) == 3
    blurred = d(np.random.default_rng(1).random((32, 32, 3)).astype(np.float32), np.random.default_rng(0))
    assert blurred.shape == (32, 32, 3)


def test_chain_applies_its_steps_in_order_and_rejects_bad_specs(photo):
    from ramir.data.online import Chain

    chain = build_degradation({"kind": "chain", "steps": [{"kind": "noise", "sigma": 20}, "jpeg"]})
    assert isinstance(chain, Chain) and str(chain) == "chain(noise(sigma=20) -> jpeg)"
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    expected = np.clip(chain.steps[1](np.clip(chain.steps[0](photo, rng_b), 0, 1), rng_b), 0, 1)
    np.testing.assert_array_equal(chain(photo, rng_a), expected)
    bad_specs = [
        {}, {"steps": []}, {"steps": ["noise"], "drop": 2}, {"steps": [{"kind": "noise", "sigmaa": 3}]},
        {"steps": ["x"]}, {"steps": ["noise"], "order": 1},
    ]
    for bad in bad_specs:
        with pytest.raises(ConfigError):
            build_degradation({"kind": "chain", **bad})


def test_new_blur_kernels_are_normalised_and_shaped():
    from ramir.data.kernels import defocus_kernel, generalized_gaussian_kernel, shake_trajectory_kernel

    disc = defocus_kernel(4.0)
    assert disc.sum() == pytest.approx(1.0, abs=1e-6) and disc.shape[0] % 2 == 1
    assert disc[disc.shape[0] // 2, disc.shape[1] // 2] == pytest.approx(disc.max())
    thin = generalized_gaussian_kernel(3.0, 0.5, angle_deg=0.0)
    assert thin.sum() == pytest.approx(1.0, abs=1e-6)
    rows, cols = thin.sum(1), thin.sum(0)  # oriented along x: wide across columns, narrow across rows
    assert (cols > 1e-3).sum() > 2 * (rows > 1e-3).sum()
    plateau = generalized_gaussian_kernel(2.0, 2.0, beta=8.0)
    c = plateau.shape[0] // 2
    assert plateau[c, c + 1] == pytest.approx(plateau[c, c], rel=0.02)  # flat top
    for seed in range(5):
        k = shake_trajectory_kernel(np.random.default_rng(seed), 30.0)
        assert k.sum() == pytest.approx(1.0, abs=1e-6) and k.shape[0] <= 2 * 30 + 5


def test_zoom_enlarges_the_centre_and_softens_the_pixels(photo):
    from ramir.data.variants import zoom

    h, w = photo.shape[:2]
    same = zoom(photo, 1.0)
    np.testing.assert_allclose(same, photo, atol=1e-6)  # scale 1: the photo itself
    z = zoom(photo, 2.0)
    assert z.shape == photo.shape and z.dtype == np.float32
    # the centre pixel stays (up to the interpolation), the corners come from the centre half
    centre = photo[h // 4 : h // 4 + round(h / 2), w // 4 : w // 4 + round(w / 2)]
    assert abs(float(z.mean()) - float(centre.mean())) < 0.02

    def grad(a):
        return float(np.abs(np.diff(a, axis=1)).mean())

    assert grad(z) < 0.75 * grad(centre)  # enlarged: softer at the pixel level than the crop it shows
    with pytest.raises(ValueError, match="at least 1"):
        zoom(photo, 0.5)
