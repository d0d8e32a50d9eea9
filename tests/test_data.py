"""Data layer: folder layouts, pairing, items, the seeded mixture, the recipe schema, `ramir data verify`."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ramir.cli import main as cli_main
from ramir.data import build_dataset, mac_images, pair_folders, read_rgb_float, source_reports, verify_sources
from ramir.data.datasets import CleanSource, PatchOptions, PatchSampler
from ramir.data.mixture import MixtureDataset
from ramir.data.online import build_degradation
from ramir.data.recipe import parse_split
from ramir.errors import ConfigError, DataError, ImageError


def write_image(
    path: Path, h: int = 40, w: int = 48, seed: int = 0, rgb: np.ndarray | None = None
) -> np.ndarray:
    """Write a random RGB PNG/JPEG and return its RGB uint8 content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb if rgb is not None else np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))
    return img


def clean_folder(root: Path, n: int = 4, h: int = 40, w: int = 48) -> Path:
    for i in range(n):
        write_image(root / f"{i:03d}.png", h, w, seed=i)
    return root


def inverted_pairs(root: Path, n: int = 3, h: int = 40, w: int = 48) -> Path:
    """input = 255 - target, pixel for pixel: any misaligned crop or flip shows."""
    for i in range(n):
        gt = write_image(root / "target" / f"{i}.png", h, w, seed=10 + i)
        write_image(root / "input" / f"{i}.png", rgb=255 - gt)
    return root


# ------------------------------------------------------------------------------------------ reading
def test_read_image_is_rgb_float(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_image(tmp_path / "red.png", rgb=rgb)
    img = read_rgb_float(tmp_path / "red.png")
    assert img.dtype == np.float32 and img.shape == (4, 5, 3)
    np.testing.assert_allclose(img[0, 0], [200 / 255, 0, 0], atol=1e-7)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((3, 3), 128, np.uint8))
    assert read_rgb_float(tmp_path / "grey.png").shape == (3, 3, 3)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((3, 3, 3), 65535, np.uint16))
    np.testing.assert_allclose(read_rgb_float(tmp_path / "deep.png"), 1.0)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"bad\.png"):
        read_rgb_float(tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------ layouts
def test_input_target_pairs_by_stem_and_reports_unmatched(tmp_path):
    for name in ("a", "b", "c"):
        write_image(tmp_path / "input" / f"{name}.png")
    for name in ("a", "b", "z"):
        write_image(tmp_path / "target" / f"{name}.png")
    p = pair_folders(tmp_path, "input_target")
    assert [(i.name, t.name) for i, t in p.pairs] == [("a.png", "a.png"), ("b.png", "b.png")]
    problems = " ".join(p.problems())
    assert "input/c.png" in problems and "target/z.png" in problems
    with pytest.warns(UserWarning, match="c.png"):
        build_dataset({"sources": [{"type": "paired", "root": str(tmp_path)}]}, train=False)


def test_no_pairs_or_empty_folders_are_errors(tmp_path):
    write_image(tmp_path / "x" / "input" / "a.png")
    write_image(tmp_path / "x" / "target" / "b.png")
    with pytest.raises(DataError, match=r"a\.png"):
        pair_folders(tmp_path / "x", "input_target")
    (tmp_path / "y" / "input").mkdir(parents=True)
    (tmp_path / "y" / "target").mkdir()
    with pytest.raises(DataError, match="no images"):
        pair_folders(tmp_path / "y", "input_target")
    with pytest.raises(DataError, match="sub-folders"):
        pair_folders(tmp_path / "x" / "input", "input_target")
    with pytest.raises(DataError, match="not found"):
        pair_folders(tmp_path / "missing", "gopro")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        build_dataset({"sources": [{"type": "clean", "root": str(tmp_path / "empty")}]})


def test_reside_matches_hazy_names_by_id_prefix(tmp_path):
    for name in ("0025_0.8_0.2.jpg", "0025_1_0.04.jpg", "0031_0.9_0.1.jpg", "0099_0.8_0.2.jpg"):
        write_image(tmp_path / "hazy" / name)
    for name in ("0025.jpg", "0031.png"):
        write_image(tmp_path / "clear" / name)
    p = pair_folders(tmp_path, "reside_ots")
    pairs = {(i.name, t.name) for i, t in p.pairs}
    assert pairs == {
        ("0025_0.8_0.2.jpg", "0025.jpg"),
        ("0025_1_0.04.jpg", "0025.jpg"),
        ("0031_0.9_0.1.jpg", "0031.png"),
    }
    assert [x.name for x in p.unmatched_inputs] == ["0099_0.8_0.2.jpg"]
    # SOTS-outdoor as distributed in input/target folders pairs the same way
    write_image(tmp_path / "sots" / "input" / "0001_0.8_0.2.jpg")
    write_image(tmp_path / "sots" / "target" / "0001.png")
    assert len(pair_folders(tmp_path / "sots", "sots_outdoor").pairs) == 1


def test_gopro_scenes_pair_within_each_scene(tmp_path):
    for scene in ("GOPR0372_07_00", "GOPR0374_11_01"):
        for stem in ("000047", "000048"):
            write_image(tmp_path / "train" / scene / "blur" / f"{stem}.png")
            write_image(tmp_path / "train" / scene / "sharp" / f"{stem}.png")
    p = pair_folders(tmp_path, "gopro")
    assert len(p.pairs) == 4 and len(p.groups) == 2 and not p.problems()
    assert all(i.parent.parent == t.parent.parent for i, t in p.pairs)  # never across scenes


def test_lol_and_rain_names_with_role_prefixes(tmp_path):
    write_image(tmp_path / "real" / "Low" / "low00001.png")
    write_image(tmp_path / "real" / "Normal" / "normal00001.png")
    write_image(tmp_path / "syn" / "Low" / "r000da3d7t.png")
    write_image(tmp_path / "syn" / "Normal" / "r000da3d7t.png")
    p = pair_folders(tmp_path, "lol_v2")  # both subsets, folders matched case-insensitively
    expected = {("low00001.png", "normal00001.png"), ("r000da3d7t.png", "r000da3d7t.png")}
    assert {(i.name, t.name) for i, t in p.pairs} == expected
    # or one source listing both roots, as RAM's single low-light source
    spec = {"sources": [{"layout": "lol_v2", "root": ["real", "syn"]}]}
    ds = build_dataset(spec, train=False, base_dir=tmp_path)
    assert len(ds) == 2 and ds.tasks == ["lowlight", "lowlight"]
    write_image(tmp_path / "rain12" / "input" / "rain-001.png")
    write_image(tmp_path / "rain12" / "target" / "norain-001.png")
    assert len(pair_folders(tmp_path / "rain12", "rain13k").pairs) == 1
    write_image(tmp_path / "lol1" / "low" / "1.png")
    write_image(tmp_path / "lol1" / "high" / "1.png")
    assert len(pair_folders(tmp_path / "lol1", "lol_v1").pairs) == 1


# -------------------------------------------------------------------------------------------- items
def test_paired_crops_and_flips_are_identical(tmp_path):
    inverted_pairs(tmp_path)
    spec = {
        "patch_size": 16,
        "samples_per_epoch": 40,
        "vflip": True,
        "rot90": True,
        "sources": [{"name": "inv", "type": "paired", "root": str(tmp_path)}],
    }
    ds = build_dataset(spec, seed=3)
    gts = []
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == item["gt"].shape == (3, 16, 16) and item["lq"].dtype == torch.float32
        assert item["task"] == "inv"
        torch.testing.assert_close(item["lq"], 1 - item["gt"], atol=1e-6, rtol=0)
        gts.append(item["gt"])
    assert len({g.sum().item() for g in gts}) > 30  # random images, crops and flips


def test_clean_source_crops_flips_then_degrades(tmp_path):
    clean_folder(tmp_path / "c", n=3)
    spec = {
        "patch_size": 24,
        "samples_per_epoch": 8,
        "sources": [
            {"name": "n", "root": str(tmp_path / "c"), "degradation": {"kind": "noise", "sigma": 30}}
        ],
    }
    ds = build_dataset(spec, seed=5)
    ds.set_epoch(2)
    degrade = build_degradation({"kind": "noise", "sigma": 30})
    paths = sorted((tmp_path / "c").glob("*.png"))
    for index in range(4):  # replay the documented draw order with the item's own Generator
        rng = np.random.default_rng([5, 2, index])
        assert rng.choice(1, p=[1.0]) == 0
        img = read_rgb_float(paths[int(rng.integers(3))])
        top, left = int(rng.integers(40 - 24 + 1)), int(rng.integers(48 - 24 + 1))
        patch = img[top : top + 24, left : left + 24]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = np.ascontiguousarray(patch)
        lq = degrade(patch, rng)
        item = ds[index]
        np.testing.assert_array_equal(item["gt"].numpy().transpose(1, 2, 0), patch)
        np.testing.assert_array_equal(item["lq"].numpy().transpose(1, 2, 0), lq)


def drawn_window(paths: list[Path], seed: int, index: int) -> tuple[np.ndarray, np.random.Generator]:
    """The 28x28 window (40x48 images, one source) that item ``index`` of a mixture seeded ``seed``
    draws, and the Generator as it stands after the draw (what degrades the window next)."""
    rng = np.random.default_rng([seed, 0, index])
    assert rng.choice(1, p=[1.0]) == 0
    img = read_rgb_float(paths[int(rng.integers(len(paths)))])
    top, left = int(rng.integers(40 - 28 + 1)), int(rng.integers(48 - 28 + 1))
    window = img[top : top + 28, left : left + 28]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    return window, rng


def test_context_degrades_a_larger_window_and_keeps_its_centre(tmp_path):
    clean_folder(tmp_path / "c", n=3)
    spec = {
        "patch_size": 16,
        "context": 6,
        "samples_per_epoch": 8,
        "sources": [{"name": "b", "root": str(tmp_path / "c"), "degradation": {"kind": "blur", "sigma": 3}}],
    }
    ds = build_dataset(spec, seed=5)
    degrade = build_degradation({"kind": "blur", "sigma": 3})
    paths = sorted((tmp_path / "c").glob("*.png"))
    for index in range(4):  # the same draw order, on a 28x28 window instead of the 16x16 patch
        window, rng = drawn_window(paths, 5, index)
        lq = degrade(np.ascontiguousarray(window), rng)
        item = ds[index]
        assert item["lq"].shape == item["gt"].shape == (3, 16, 16)
        np.testing.assert_array_equal(item["gt"].numpy().transpose(1, 2, 0), window[6:22, 6:22])
        np.testing.assert_array_equal(item["lq"].numpy().transpose(1, 2, 0), lq[6:22, 6:22])
        # the blur at the patch's edge saw real pixels, not the patch reflected
        reflected = degrade(np.ascontiguousarray(window[6:22, 6:22]), rng)
        assert np.abs(reflected - lq[6:22, 6:22]).max() > 1e-3
    with pytest.raises(ConfigError, match="context"):
        parse_split({**spec, "context": -1}, where="data.train")


def test_base_makes_the_target_itself(tmp_path):
    """``base`` degrades the window first, input and target alike; ``degradation`` then makes the input."""
    clean_folder(tmp_path / "c", n=3)
    spec = {
        "patch_size": 16,
        "context": 6,
        "samples_per_epoch": 8,
        "sources": [{"name": "kept", "root": str(tmp_path / "c"), "base": {"kind": "blur", "sigma": 3},
                     "degradation": {"kind": "noise", "sigma": 20}}],
    }
    ds = build_dataset(spec, seed=5)
    blur = build_degradation({"kind": "blur", "sigma": 3})
    noise = build_degradation({"kind": "noise", "sigma": 20})
    paths = sorted((tmp_path / "c").glob("*.png"))
    for index in range(4):  # the draw order of a plain source, with the base drawn before the degradation
        window, rng = drawn_window(paths, 5, index)
        target = blur(np.ascontiguousarray(window), rng)
        lq = noise(np.ascontiguousarray(target), rng)
        item = ds[index]
        gt = item["gt"].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(gt, target[6:22, 6:22], atol=1e-6)
        np.testing.assert_allclose(item["lq"].numpy().transpose(1, 2, 0), lq[6:22, 6:22], atol=1e-6)
        assert np.abs(gt - window[6:22, 6:22]).max() > 0.05  # the target is the blurred photo
    # validation items too: an identity degradation on a base gives input == target != photo
    val = build_dataset({"size": 24, "sources": [{"name": "v", "root": str(tmp_path / "c"),
                                                  "base": {"kind": "blur", "sigma": 2}}]}, train=False)
    item = val[0]
    torch.testing.assert_close(item["lq"], item["gt"])
    photo = read_rgb_float(paths[0])
    assert np.abs(item["gt"].numpy().transpose(1, 2, 0) - photo[8:32, 12:36]).max() > 0.05
    grown = build_dataset({"patch_size": 16, "samples_per_epoch": 2, "sources": [
        {"name": "g", "root": str(tmp_path / "c"), "base": {"kind": "zoom", "scale": 2, "whole": True}}]})
    with pytest.raises(DataError, match="changes the image's size"):  # an evaluation-only base
        grown[0]
    with pytest.raises(ConfigError, match="'base' applies to clean sources"):
        parse_split({"sources": [{"root": str(tmp_path), "layout": "input_target",
                                  "base": {"kind": "blur"}}]}, where="data.train")
    with pytest.raises(ConfigError, match=r"sources\[0\]\.base: unknown degradation 'nonsense'"):
        parse_split({"sources": [{"root": str(tmp_path / "c"), "base": {"kind": "nonsense"}}]},
                    where="data.train")


def test_identity_source_and_small_images(tmp_path):
    clean_folder(tmp_path / "small", n=2, h=10, w=12)
    write_image(tmp_path / "small" / "big.png", 40, 40)
    src = {"type": "clean", "root": str(tmp_path / "small")}
    ds = build_dataset({"patch_size": 32, "samples_per_epoch": 6, "sources": [src]})
    for i in range(6):
        item = ds[i]
        assert item["lq"].shape == (3, 32, 32) and item["task"] == "clean"
        torch.testing.assert_close(item["lq"], item["gt"])
    with pytest.warns(UserWarning, match="skipping 2 images smaller than 32x32"):
        skipped = build_dataset(
            {"patch_size": 32, "samples_per_epoch": 2, "small_images": "skip", "sources": [src]}
        )
    assert len(skipped.samplers[0].source) == 1
    with pytest.raises(DataError, match="every image"):
        build_dataset({"patch_size": 64, "samples_per_epoch": 2, "small_images": "skip", "sources": [src]})


def test_paired_size_mismatch_is_reported(tmp_path):
    write_image(tmp_path / "input" / "a.png", 20, 20)
    write_image(tmp_path / "target" / "a.png", 20, 24)
    ds = build_dataset(
        {"patch_size": 8, "samples_per_epoch": 1, "sources": [{"type": "paired", "root": str(tmp_path)}]}
    )
    with pytest.raises(DataError, match=r"a\.png"):
        ds[0]
    assert any(
        "differ in size" in p
        for p in verify_sources({"sources": [{"type": "paired", "root": str(tmp_path)}]})
    )


def test_validation_is_deterministic(tmp_path):
    clean_folder(tmp_path / "c", n=5, h=40, w=48)
    inverted_pairs(tmp_path / "p", n=2)
    spec = {
        "size": 32,
        "max_images": 3,
        "sources": [
            {
                "name": "noise",
                "root": str(tmp_path / "c"),
                "degradation": {"kind": "noise", "sigma": [5, 50]},
            },
            {"name": "inv", "type": "paired", "root": str(tmp_path / "p")},
        ],
    }
    a, b = build_dataset(spec, train=False), build_dataset(spec, train=False)
    assert len(a) == 5 and a.tasks == ["noise"] * 3 + ["inv"] * 2
    for i in range(len(a)):
        torch.testing.assert_close(a[i]["lq"], b[i]["lq"], rtol=0, atol=0)
        assert a[i]["lq"].shape == (3, 32, 32)
    assert a[0]["name"] == "000.png"
    full = read_rgb_float(tmp_path / "c" / "000.png")
    np.testing.assert_array_equal(a[0]["gt"].numpy().transpose(1, 2, 0), full[4:36, 8:40])  # centre crop
    assert not torch.equal(a[0]["lq"], build_dataset(spec, train=False, seed=1)[0]["lq"])
    whole = build_dataset({**spec, "size": None}, train=False)
    assert whole[0]["gt"].shape == (3, 40, 48)


# ------------------------------------------------------------------------------------------ mixture
def mixture_spec(tmp_path: Path, weights=(1, 1)) -> dict:
    clean_folder(tmp_path / "c", n=4)
    inverted_pairs(tmp_path / "p", n=2)
    return {
        "patch_size": 16,
        "samples_per_epoch": 24,
        "sources": [
            {
                "name": "noise",
                "root": str(tmp_path / "c"),
                "degradation": {"kind": "noise"},
                "weight": weights[0],
            },
            {"name": "inv", "type": "paired", "root": str(tmp_path / "p"), "weight": weights[1]},
        ],
    }


def stack(ds, indices) -> torch.Tensor:
    return torch.stack([torch.cat([ds[i]["lq"], ds[i]["gt"]]) for i in indices])


def test_mixture_is_reproducible_by_seed_and_epoch(tmp_path):
    spec = mixture_spec(tmp_path)
    a, b = build_dataset(spec, seed=1), build_dataset(spec, seed=1)
    idx = list(range(len(a)))
    assert torch.equal(stack(a, idx), stack(b, idx))
    assert torch.equal(stack(a, [7, 3]), stack(b, [3, 7]).flip(0))  # independent of the access order
    assert not torch.equal(stack(a, idx), stack(build_dataset(spec, seed=2), idx))
    before = stack(a, idx)
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.equal(before, stack(a, idx))
    assert {a[i]["task"] for i in idx} == {"noise", "inv"}


def test_mixture_does_not_depend_on_workers_or_sampler(tmp_path):
    ds = build_dataset(mixture_spec(tmp_path), seed=4)
    ds.set_epoch(3)

    def batches(loader) -> torch.Tensor:
        return torch.cat([torch.cat([b["lq"], b["gt"]], 1) for b in loader])

    reference = stack(ds, range(len(ds)))
    assert torch.equal(batches(DataLoader(ds, batch_size=4)), reference)
    persistent = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    assert torch.equal(batches(persistent), reference)
    ds.set_epoch(4)  # reaches the running workers (shared memory)
    assert torch.equal(batches(persistent), stack(ds, range(len(ds))))
    ds.set_epoch(3)
    shards = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(len(ds)))
    assert torch.equal(stack(ds, shards[1]), reference[shards[1]])


def test_mixture_weights(tmp_path):
    spec = mixture_spec(tmp_path, weights=(3, 1))
    ds = build_dataset({**spec, "samples_per_epoch": 4000})
    share = np.mean([ds.source_index(i) == 0 for i in range(len(ds))])
    assert abs(share - 0.75) < 0.03
    uniform = build_dataset(
        {**spec, "samples_per_epoch": 4000, "sources": [{**s, "weight": 1} for s in spec["sources"]]}
    )
    assert abs(np.mean([uniform.source_index(i) == 0 for i in range(4000)]) - 0.5) < 0.03
    never = build_dataset({**spec, "sources": [{**spec["sources"][0], "weight": 0}, spec["sources"][1]]})
    assert all(never[i]["task"] == "inv" for i in range(len(never)))
    with pytest.raises(ConfigError):
        build_dataset({**spec, "sources": [{**s, "weight": -1} for s in spec["sources"]]})
    with pytest.raises(ConfigError):
        MixtureDataset([], samples_per_epoch=3)
    sampler = PatchSampler(
        CleanSource("x", sorted((tmp_path / "c").glob("*.png")), build_degradation("blur")), PatchOptions(8)
    )
    assert len(MixtureDataset([sampler], samples_per_epoch=5)) == 5


# ------------------------------------------------------------------------------------------- recipe
def test_recipe_rejects_typos_and_resolves_relative_roots(tmp_path):
    clean_folder(tmp_path / "data" / "c", n=2)
    ok = {"sources": [{"root": "data/c", "degradation": {"kind": "jpeg"}}]}
    split = parse_split(ok, train=True, base_dir=tmp_path)
    assert split.sources[0].roots == (tmp_path / "data" / "c",) and split.sources[0].name == "jpeg"
    assert len(build_dataset(ok, base_dir=tmp_path, seed=0)) == 10000
    with h5py.File(tmp_path / "data" / "k.mat", "w") as f:  # kernel files resolve against base_dir too
        f.create_dataset("kernels", data=np.ones((2, 5, 5)))
    motion = {
        "patch_size": 16,
        "sources": [{"root": "data/c", "degradation": {"kind": "motion", "kernels": "data/k.mat"}}],
    }
    split = parse_split(motion, train=True, base_dir=tmp_path)
    assert build_dataset(split, seed=0)[0]["task"] == "motion"  # a parsed spec needs no base_dir any more
    bad = [
        {"sources": [{"root": "data/c", "wieght": 2}]},
        {"patch_sise": 32, "sources": [{"root": "data/c"}]},
        {"sources": [{"root": "data/c", "degradation": {"kind": "noise", "sgima": 3}}]},
        {"sources": [{"type": "paired", "root": "data/c", "layout": "gopr0"}]},
        {"sources": [{"type": "clean", "root": "data/c", "input_dir": "x"}]},
        {"sources": [{"type": "pairs", "root": "data/c"}]},
        {"sources": []},
        {"patch_size": 0, "sources": [{"root": "data/c"}]},
    ]
    for spec in bad:
        with pytest.raises(ConfigError):
            build_dataset(spec, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="size"):
        parse_split({"size": 64, "sources": [{"root": "c"}]}, train=True)  # a val key in train


def test_verify_sources_reports_problems(tmp_path):
    clean_folder(tmp_path / "c", n=2)
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG truncated")
    write_image(tmp_path / "p" / "input" / "a.png")
    write_image(tmp_path / "p" / "input" / "orphan.png")
    write_image(tmp_path / "p" / "target" / "a.png")
    spec = {
        "sources": [
            {"name": "c", "root": str(tmp_path / "c")},
            {"name": "p", "type": "paired", "root": str(tmp_path / "p")},
            {"name": "gone", "root": str(tmp_path / "nowhere")},
        ]
    }
    problems = verify_sources(spec)
    text = "\n".join(problems)
    assert "c: 1 unreadable files: c/broken.png" in text
    assert "p: 1 inputs without a target: input/orphan.png" in text
    assert "gone: " in text and "not found" in text
    reports = source_reports(spec, decode=False)
    assert [r.count for r in reports] == [3, 1, 0]
    good = {"sources": [{"name": "c", "root": str(tmp_path / "p" / "target")}]}
    assert verify_sources(good) == []


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump({"model": "ram-swinir-small", "data": data}))
    return path


def test_cli_verify_exit_codes(tmp_path, capsys):
    inverted_pairs(tmp_path / "pairs")
    clean_folder(tmp_path / "clean", n=2)
    good = write_recipe(
        tmp_path / "good.yaml",
        {
            "train": {"patch_size": 16, "sources": [{"name": "inv", "type": "paired", "root": "pairs"}]},
            "val": {
                "size": 16,
                "sources": [
                    {"name": "noisy", "root": "clean", "degradation": {"kind": "noise", "sigma": 25}}
                ],
            },
        },
    )
    assert cli_main(["data", "verify", str(good)]) == 0
    out = capsys.readouterr().out
    assert "inv [paired]" in out and "3 items" in out and "noisy [clean]" in out and "all sources ok" in out
    write_image(tmp_path / "pairs" / "input" / "extra.png")
    assert cli_main(["data", "verify", str(good)]) == 1
    assert "extra.png" in capsys.readouterr().out
    typo = write_recipe(
        tmp_path / "typo.yaml", {"train": {"sources": [{"root": "clean", "degradaton": "noise"}]}}
    )
    assert cli_main(["data", "verify", str(typo)]) == 2
    assert "degradaton" in capsys.readouterr().err
    assert cli_main(["data", "verify", str(tmp_path / "missing.yaml")]) == 2
    child = tmp_path / "child.yaml"  # the data a recipe inherits through _base_ are verified too
    child.write_text("_base_: good.yaml\nname: child\n")
    assert cli_main(["data", "verify", str(child)]) == 1 and "extra.png" in capsys.readouterr().out


def test_mac_images(tmp_path):
    spec = mixture_spec(tmp_path)
    spec["sources"].append({"name": "identity", "root": str(tmp_path / "c")})
    x, tasks = mac_images(spec, per_source=3, size=12, seed=0)
    assert x.shape == (5, 3, 12, 12) and x.dtype == torch.float32  # 3 noise + 2 pairs, identity skipped
    assert tasks == ["noise"] * 3 + ["inv"] * 2 and x.min() >= 0 and x.max() <= 1
    y, _ = mac_images(spec, per_source=3, size=12, seed=0)
    assert torch.equal(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, t = mac_images(spec, per_source=1, size=12, skip_identity=False)
    assert t == ["noise", "inv", "identity"] and z.shape[0] == 3


def test_exclude_and_only_hold_a_validation_split_out(tmp_path):
    clean_folder(tmp_path / "c", n=5)
    inverted_pairs(tmp_path / "p", n=3)
    (tmp_path / "val.txt").write_text("# the held-out names\n001.png\n003.jpg  # stem match\n")
    (tmp_path / "pval.txt").write_text("2.png\n")
    train = {
        "sources": [
            {"name": "c", "root": "c", "exclude": "val.txt"},
            {"name": "p", "type": "paired", "root": "p", "exclude": "pval.txt"},
        ]
    }
    val = {
        "size": None,
        "sources": [
            {"name": "c", "root": "c", "only": "val.txt"},
            {"name": "p", "type": "paired", "root": "p", "only": "pval.txt"},
        ],
    }
    mixture = build_dataset(train, base_dir=tmp_path, seed=0)
    train_files = {p.name for s in mixture.samplers for p in _source_files(s.source)}
    assert train_files == {"000.png", "002.png", "004.png", "0.png", "1.png"}
    held = build_dataset(val, base_dir=tmp_path, train=False)
    assert sorted(item["name"] for item in held) == ["001.png", "003.png", "2.png"]
    (tmp_path / "all.txt").write_text("".join(f"{i:03d}.png\n" for i in range(5)))
    with pytest.raises(DataError, match="leaves no image"):
        build_dataset({"sources": [{"root": "c", "exclude": "all.txt"}]}, base_dir=tmp_path)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no image"):
        build_dataset({"sources": [{"root": "c", "only": "empty.txt"}]}, base_dir=tmp_path)


def _source_files(source) -> list[Path]:
    return list(source.paths) if isinstance(source, CleanSource) else [lq for lq, _ in source.pairs]
