"""Rain streaks transplanted from a paired rain set (ramir.data.streaks): the split of a pair's rain into
streaks and veil, the direction map, the draw, and its use by recipes and evaluation suites."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from ramir import evaluation as ev
from ramir.data import build_dataset
from ramir.data import streaks as st
from ramir.data.online import build_degradation
from ramir.errors import ConfigError, DataError


def _lines(h: int, w: int, angle: float, step: int, value: float = 0.5) -> np.ndarray:
    """Parallel 1-px lines at ``angle`` degrees from vertical, ``step`` px apart."""
    layer = np.zeros((h, w), np.float32)
    dx = np.tan(np.deg2rad(angle)) * h
    for x0 in range(-int(abs(dx)) - step, w + int(abs(dx)) + step, step):
        cv2.line(layer, (int(x0), 0), (int(x0 + dx), h - 1), value, 1)
    return layer


def _clean(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([0.2 + 0.3 * xx / w, 0.3 + 0.2 * yy / h, np.full((h, w), 0.35, np.float32)], 2)


def _pair_folder(root: Path, names: list[str], h: int = 64, w: int = 80) -> None:
    for k, name in enumerate(names):
        clean = _clean(h, w)
        rain = _lines(h, w, (-20, 20)[k % 2], 6) + 0.08  # streaks over a uniform veil
        rainy = np.clip(clean + rain[..., None], 0, 1)
        for sub, img in (("input", rainy), ("target", clean)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(root / sub / f"{name}.png")


def test_split_rain_separates_thin_streaks_from_the_veil():
    h, w = 64, 80
    clean = _clean(h, w)
    lines = _lines(h, w, 0, 8)
    rainy = np.clip(clean + (lines + 0.1)[..., None], 0, 1)
    streaks, veil = st.split_rain(rainy, clean)
    on, off = lines > 0, cv2.dilate((lines > 0).astype(np.uint8), np.ones((3, 3))) == 0
    assert streaks[on].mean() > 0.4 and streaks[off].mean() < 0.02  # the lines, and nothing between
    assert abs(float(np.median(veil)) - 0.1) < 0.03  # the uniform part is the veil


def test_direction_map_and_one_direction_keep_one_set_of_lines():
    h, w = 96, 96
    left, right = _lines(h, w, -30, 24), _lines(h, w, 30, 24)  # sparse: few crossings
    both = np.maximum(left, right)
    directions = st.direction_map(both)
    angles = st.ANGLES[directions]
    only_left = (left > 0) & (right == 0)
    assert np.median(angles[only_left]) == pytest.approx(-30, abs=3)
    kept = []
    for seed in range(6):
        mask = st.one_direction(directions, both, np.random.default_rng(seed))
        kept.append((float(mask[only_left].mean()), float(mask[(right > 0) & (left == 0)].mean())))
    for a, b in kept:  # each draw keeps one of the two directions and drops the other
        assert max(a, b) > 0.9 and min(a, b) < 0.25  # what is left: near the crossings
    assert {a > b for a, b in kept} == {True, False}  # and both directions get drawn


def test_bank_from_a_paired_folder_with_name_lists(tmp_path):
    _pair_folder(tmp_path / "rain", ["1", "2", "3"])
    (tmp_path / "val.txt").write_text("# held out\n3.png\n")
    train = st.load_streak_bank(str(tmp_path / "rain"), exclude=str(tmp_path / "val.txt"))
    val = st.load_streak_bank(str(tmp_path / "rain"), only=str(tmp_path / "val.txt"))
    assert (len(train), len(val)) == (2, 1)
    assert train.streaks[0].dtype == np.float16 and train.directions[0].dtype == np.uint8
    assert st.load_streak_bank(str(tmp_path / "rain"), only=str(tmp_path / "val.txt")) is val  # cached
    (tmp_path / "none.txt").write_text("9.png\n")
    with pytest.raises(DataError, match="no pairs"):
        st.load_streak_bank(str(tmp_path / "rain"), only=str(tmp_path / "none.txt"))


def test_draw_adds_streaks_deterministically(tmp_path):
    _pair_folder(tmp_path / "rain", ["1", "2"])
    bank = st.load_streak_bank(str(tmp_path / "rain"))
    img = _clean(100, 120)  # larger than the bank's layers: they are reflected to cover it
    a = st.random_rain_transfer(img, np.random.default_rng(3), bank=bank)
    assert a.shape == img.shape and a.dtype == np.float32 and a.max() <= 1
    assert (a >= img - 1e-6).all() and (a - img).mean() > 1e-3  # rain only brightens
    assert np.array_equal(a, st.random_rain_transfer(img, np.random.default_rng(3), bank=bank))
    assert not np.array_equal(a, st.random_rain_transfer(img, np.random.default_rng(4), bank=bank))
    weak = st.random_rain_transfer(img, np.random.default_rng(3), bank=bank, strength=0.2, veil=0.0)
    strong = st.random_rain_transfer(img, np.random.default_rng(3), bank=bank, strength=1.0, veil=0.0)
    assert (strong - img).sum() == pytest.approx(5 * (weak - img).sum(), rel=0.05)  # strength scales it
    with pytest.raises(DataError, match="bank"):
        st.random_rain_transfer(img, np.random.default_rng(0))


def test_recipe_bank_paths_resolve_against_the_recipe(tmp_path):
    _pair_folder(tmp_path / "data" / "rain", ["1", "2"])
    clean = tmp_path / "data" / "c"
    clean.mkdir()
    for i in range(2):
        Image.fromarray(np.rint(_clean(48, 48) * 255).astype(np.uint8)).save(clean / f"{i}.png")
    spec = {
        "patch_size": 32,
        "sources": [
            {"root": "data/c", "degradation": {"kind": "rain_transfer", "bank": "data/rain", "single": 1.0}}
        ],
    }
    item = build_dataset(spec, base_dir=tmp_path, seed=0)[0]
    assert item["task"] == "rain_transfer" and (item["lq"] >= item["gt"] - 1e-6).all()
    with pytest.raises(ConfigError, match="bank"):
        build_degradation({"kind": "rain_transfer"})
    with pytest.raises(ConfigError, match="bank_onyl"):
        build_degradation({"kind": "rain_transfer", "bank": "x", "bank_onyl": "y"}, load=False)


def test_suite_task_with_options_reads_the_bank_beside_the_data(tmp_path):
    data = tmp_path / "data"
    _pair_folder(data / "rain", ["1", "2"])
    (data / "photos").mkdir()
    for i in range(2):
        Image.fromarray(np.rint(_clean(40, 56) * 255).astype(np.uint8)).save(data / "photos" / f"p{i}.png")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "val.txt").write_text("2.png\n")
    suite_file = tmp_path / "cfg" / "suite.yaml"
    task = {"clean": "photos", "degradation": "rain_transfer", "level": 1.0,
            "options": {"bank": "rain", "bank_only": "val.txt", "single": 1.0, "veil": 0.0}}
    suite_file.write_text(yaml.safe_dump({"data_root": "../data", "tasks": {"rt": task}}))
    (spec,) = ev.load_suite(suite_file).tasks
    assert Path(spec.options["bank"]).resolve() == data / "rain" and "bank=rain" in spec.describe()
    first = [s.lq for s in ev.iter_samples(spec)]
    again = [s.lq for s in ev.iter_samples(spec)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(float((a - b.gt_u8 / 255).mean()) > 1e-3 for a, b in zip(first, ev.iter_samples(spec)))
    bad = {"tasks": {"rt": {"paired": "rain", "options": {"bank": "rain"}}}, "data_root": "../data"}
    suite_file.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="options"):
        ev.load_suite(suite_file)
    missing = {"tasks": {"rt": {"clean": "photos", "degradation": "rain_transfer"}}, "data_root": "../data"}
    suite_file.write_text(yaml.safe_dump(missing))
    with pytest.raises(ConfigError, match="bank"):
        ev.load_suite(suite_file)
