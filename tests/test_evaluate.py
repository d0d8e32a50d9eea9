"""``ramir evaluate``: task specs, suites, deterministic degradations, baselines and the written outputs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ramir
from ramir import evaluation as ev
from ramir import metrics
from ramir.cli import main
from ramir.errors import ConfigError, DataError


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, textured test image (gradients plus blobs), not pure noise, so denoising can help."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 7 + yy / 11)], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 15)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    for i in range(3):
        _save(root / "clean" / f"img{i}.png", _photo(48, 56, i))
        gt = _photo(40, 40, 10 + i)
        _save(root / "pairs" / "target" / f"p{i}.png", gt)
        _save(root / "pairs" / "input" / f"p{i}.png", (gt * 0.7).astype(np.uint8))
    torch.manual_seed(0)
    from ramir.checkpoints import save_checkpoint

    net = ramir.create_model("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2])
    save_checkpoint(root / "tiny.safetensors", net)
    return root


# ------------------------------------------------------------------------------------------ parsing
def test_parse_task_forms(data):
    t = ev.parse_task(f"n25=clean:{data / 'clean'}:noise:25", seed=3)
    assert (t.name, t.source, t.degradation, t.level, t.seed) == ("n25", "clean", "noise", 25.0, 3)
    t = ev.parse_task(f"b=clean:{data / 'clean'}:blur")
    assert (t.degradation, t.level) == ("blur", None)
    t = ev.parse_task(f"sp=clean:{data / 'clean'}:salt-pepper:0.05")
    assert (t.degradation, t.level) == ("salt_pepper", 0.05)
    t = ev.parse_task(f"rain=paired:{data / 'pairs'}")
    assert (t.root, t.layout) == (data / "pairs", "input_target")
    t = ev.parse_task(f"rain=paired:{data / 'pairs'}:rain13k")
    assert (t.root, t.layout) == (data / "pairs", "rain13k")


def test_parse_task_folder_with_colon(tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    t = ev.parse_task(f"x=clean:{folder}:jpeg:40")
    assert (t.root, t.degradation, t.level) == (folder, "jpeg", 40.0)


@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        ("nameonly", ConfigError, "expected NAME=paired"),
        ("x=somewhere:DIR", ConfigError, "'paired' or 'clean'"),
        ("x=clean:{clean}:sharpen:3", ConfigError, "unknown degradation"),
        ("x=clean:{clean}:noise", ConfigError, "needs a level"),
        ("x=clean:{root}/nope:noise:25", DataError, "no such folder"),
        ("x=paired:{clean}", DataError, "no paired sub-folders"),
    ],
)
def test_parse_task_errors(data, spec, error, needle):
    with pytest.raises(error, match=needle):
        ev.parse_task(spec.format(clean=data / "clean", root=data))


def test_suite_file(data, tmp_path):
    suite = tmp_path / "suite.yaml"
    rel = Path("..") / data.name
    suite.write_text(
        f"seed: 5\nmax_images: 2\n"
        f"tasks:\n"
        f"  n15: {{clean: {data / 'clean'}, degradation: noise, level: 15}}\n"
        f"  rel: {{paired: {rel / 'pairs'}}}\n"
        f"  own: {{paired: {data / 'pairs'}, input: input, target: target, seed: 9}}\n"
        f"  lay: {{paired: {data / 'pairs'}, layout: rain13k}}\n"
        f"models: {{tiny: {data / 'tiny.safetensors'}}}\n"
        f"baselines: [input]\n"
    )
    s = ev.load_suite(suite)
    assert [t.name for t in s.tasks] == ["n15", "rel", "own", "lay"]
    assert [t.seed for t in s.tasks] == [5, 5, 9, 5]
    assert s.tasks[1].root.resolve() == (data / "pairs").resolve()
    assert (s.tasks[2].input_dir, s.tasks[2].target_dir, s.tasks[3].layout) == ("input", "target", "rain13k")
    assert s.max_images == 2 and s.baselines == ["input"] and "tiny" in s.models
    assert ev.load_suite(suite, seed=1).tasks[0].seed == 1  # the command line wins over the file
    suite.write_text("tasks: {a: {clean: x, degradation: noise, level: 1, colour: red}}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        ev.load_suite(suite)
    suite.write_text("task: {}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        ev.load_suite(suite)


def test_suite_data_root_from_the_file_or_the_command_line(data, tmp_path, capsys):
    """One suite serves wherever the data sit: task folders resolve against --data-root, else the
    file's data_root, else the file's folder; name lists stay beside the suite."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "keep.txt").write_text("0\n")
    suite = tmp_path / "conf" / "suite.yaml"
    rel = os.path.relpath(data, tmp_path / "conf")
    suite.write_text(
        f"data_root: {rel}\ntasks:\n  p: {{paired: pairs, only: keep.txt}}\n"
        "  n: {clean: clean, degradation: noise, level: 15}\n"
    )
    moved = tmp_path / "moved"
    moved.mkdir()
    for sub in ("pairs", "clean"):
        (moved / sub).symlink_to(data / sub)
    assert [t.root.resolve() for t in ev.load_suite(suite).tasks] == [data / "pairs", data / "clean"]
    s = ev.load_suite(suite, data_root=moved)
    assert [t.root for t in s.tasks] == [moved / "pairs", moved / "clean"]
    assert s.tasks[0].only == tmp_path / "conf" / "keep.txt"
    with pytest.raises(ConfigError, match=r"--data-root .*no such folder"):
        ev.load_suite(suite, data_root=tmp_path / "nowhere")
    code = main(["evaluate", "--task", f"x=clean:{data / 'clean'}:noise:15", "--data-root", str(moved)])
    assert code == 2 and "--data-root applies to a --suite" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ degradations
def test_degradations_are_deterministic_per_image(data):
    task = ev.parse_task(f"n=clean:{data / 'clean'}:noise:25", seed=0)
    full = {s.name: s.lq for s in ev.iter_samples(task)}
    again = {s.name: s.lq for s in ev.iter_samples(task, max_images=2)}
    assert list(again) == ["img0", "img1"]
    for name, lq in again.items():
        assert np.array_equal(lq, full[name])
    assert not np.array_equal(full["img0"], full["img1"][: full["img0"].shape[0]])
    other = ev.parse_task(f"n=clean:{data / 'clean'}:noise:25", seed=1)
    assert not np.array_equal(next(ev.iter_samples(other)).lq, full["img0"])
    # routed to the data package's test degradation with the per-image seed
    from ramir.data.degradations import degrade_for_test

    clean = np.asarray(Image.open(data / "clean" / "img0.png"), dtype=np.float32) / 255
    expected = degrade_for_test(clean, "noise", 25.0, ev.image_seed(0, "img0"))
    assert np.array_equal(full["img0"], expected)
    assert abs(float((full["img0"] - clean).std()) * 255 - 25) < 4


@pytest.mark.parametrize("kind", ["haze", "low_light", "motion", "rain", "poisson", "speckle", "salt_pepper"])
def test_other_degradations_run_and_change_the_image(kind):
    clean = _photo(32, 40, 1).astype(np.float32) / 255
    level = {"poisson": 4.0, "speckle": 0.2, "salt_pepper": 0.05}.get(kind)
    a = ev.degrade(clean, kind, level, seed=7)
    assert a.shape == clean.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert np.abs(a - clean).mean() > 1e-3
    assert np.array_equal(a, ev.degrade(clean, kind, level, seed=7))


def test_nlm_baseline_denoises_and_skips_other_tasks(data):
    nlm = ev.nlm_baseline()
    noise = ev.parse_task(f"n=clean:{data / 'clean'}:noise:25")
    blur = ev.parse_task(f"b=clean:{data / 'clean'}:blur")
    sample = next(ev.iter_samples(noise))
    out = nlm.fn(sample.lq, noise)
    assert (
        metrics.psnr(metrics.quantize_u8(out), sample.gt_u8)
        > metrics.psnr(metrics.quantize_u8(sample.lq), sample.gt_u8) + 1
    )
    assert nlm.fn(sample.lq, blur) is None


def test_paired_matching(tmp_path):
    # Rain100L-style names pair by number; an input without a target is an error
    _save(tmp_path / "r" / "input" / "rain-001.png", _photo(16, 16, 0))
    _save(tmp_path / "r" / "target" / "norain-001.png", _photo(16, 16, 1))
    _save(tmp_path / "r" / "input" / "rain-002.png", _photo(16, 16, 2))
    task = ev.parse_task(f"x=paired:{tmp_path / 'r'}")
    with pytest.raises(DataError, match="no target"):
        list(ev.iter_samples(task))
    (tmp_path / "r" / "input" / "rain-002.png").unlink()
    (sample,) = ev.iter_samples(task)
    assert sample.name == "rain-001"
    assert np.array_equal(sample.gt_u8, _photo(16, 16, 1))
    assert np.array_equal(metrics.quantize_u8(sample.lq), _photo(16, 16, 0))
    # GoPro-style scenes: detected layout, names made unique by the scene folder
    for scene in ("s1", "s2"):
        _save(tmp_path / "g" / scene / "blur" / "000001.png", _photo(16, 16, 3))
        _save(tmp_path / "g" / scene / "sharp" / "000001.png", _photo(16, 16, 4))
    task = ev.parse_task(f"g=paired:{tmp_path / 'g'}")
    assert task.layout == "gopro"
    assert [s.name for s in ev.iter_samples(task)] == ["s1_000001", "s2_000001"]


# ------------------------------------------------------------------------------------- end to end
def test_cli_end_to_end(data, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = [
        "evaluate", "--model", f"tiny={data / 'tiny.safetensors'}",
        "--baseline", "input", "--baseline", "nlm",
        "--task", f"n25=clean:{data / 'clean'}:noise:25", "--task", f"pairs=paired:{data / 'pairs'}",
        "--task", f"haze=clean:{data / 'clean'}:haze", "--max-images", "2", "--crops", "1",
        "--device", "cpu", "--tile", "0", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["crops", "per_image.csv", "report.md", "results.json"]

    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 3 * 2 * 3  # tasks x images x methods
    res = json.loads((out / "results.json").read_text())
    assert res["ramir_version"] == ramir.__version__
    assert set(res["protocols"]) == {"reference", "skimage"}
    assert {t["name"]: t["seed"] for t in res["tasks"]} == {"n25": 0, "pairs": 0, "haze": 0}
    assert [m["label"] for m in res["methods"]] == ["input", "nlm", "tiny"]
    assert res["settings"]["max_images"] == 2

    # summary = mean of the per-image values; nlm only on the noise task
    for task in ("n25", "pairs", "haze"):
        for method in ("input", "tiny"):
            vals = [float(r["psnr_reference"]) for r in rows if r["task"] == task and r["method"] == method]
            assert res["summary"][task][method]["psnr_reference"] == pytest.approx(np.mean(vals), abs=1e-5)
    assert res["summary"]["haze"]["nlm"]["psnr_reference"] is None
    assert res["summary"]["n25"]["nlm"]["psnr_reference"] > res["summary"]["n25"]["input"]["psnr_reference"]

    # the numbers are the metrics of the actual images: recompute one input and one model row
    task = ev.parse_task(f"n25=clean:{data / 'clean'}:noise:25")
    sample = next(ev.iter_samples(task))
    row = {r["method"]: r for r in rows if r["task"] == "n25" and r["image"] == sample.name}
    expected = metrics.psnr(metrics.quantize_u8(sample.lq), sample.gt_u8, crop_border=4)
    assert float(row["input"]["psnr_reference"]) == pytest.approx(expected, abs=1e-5)
    restored = ramir.inference.load(data / "tiny.safetensors", device="cpu", tile=0).restore(sample.lq)
    assert float(row["tiny"]["ssim_skimage"]) == pytest.approx(
        metrics.ssim_skimage(np.clip(restored, 0, 1), sample.gt_u8.astype(np.float32) / 255), abs=1e-5
    )

    report = (out / "report.md").read_text()
    assert "## Reference protocol" in report and "## PromptIR protocol" in report
    for label in ("| input |", "| nlm |", "| tiny |"):
        assert report.count(label) == 3  # two metric tables + the methods table
    # crop: input | nlm | tiny | target for the noise task (nlm absent for haze)
    crop = Image.open(out / "crops" / "n25" / "img0.png")
    assert crop.size == (4 * (56 + 4) - 4, 48 + 16)
    assert Image.open(out / "crops" / "haze" / "img0.png").size == (3 * (56 + 4) - 4, 48 + 16)
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporaries
    assert "tiny" in capsys.readouterr().out

    # a second run refuses to overwrite, unless asked
    before = (out / "results.json").read_bytes()
    assert main(argv) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def test_cli_errors(data, tmp_path, capsys):
    assert main(["evaluate", "--baseline", "input", "--out", str(tmp_path / "o")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    task = f"n=clean:{data / 'clean'}:noise:25"
    assert main(["evaluate", "--task", task, "--out", str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err
    assert (
        main(["evaluate", "--task", task, "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path)])
        == 2
    )
    assert "missing.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bm3d_baseline_denoises_and_skips_other_tasks(data):
    pytest.importorskip("bm3d")  # an optional extra; requirements.lock installs it for the tests
    method = ev.bm3d_baseline()
    noise = ev.parse_task(f"n=clean:{data / 'clean'}:noise:25")
    sample = next(ev.iter_samples(noise))
    out = method.fn(sample.lq, noise)
    assert out.shape == sample.lq.shape and out.dtype == np.float32
    gain = metrics.psnr(metrics.quantize_u8(out), sample.gt_u8) - metrics.psnr(
        metrics.quantize_u8(sample.lq), sample.gt_u8
    )
    assert gain > 3
    assert method.fn(sample.lq, ev.parse_task(f"b=clean:{data / 'clean'}:jpeg:50")) is None


def test_bm3d_baseline_missing_package_is_a_config_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bm3d(name, *args, **kwargs):
        if name == "bm3d":
            raise ImportError("no bm3d")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bm3d)
    with pytest.raises(ConfigError, match=r"pip install 'ramir\[bm3d\]'"):
        ev.bm3d_baseline()


def test_only_list_keeps_the_named_images_and_none_is_the_clean_photo(data, tmp_path):
    names = tmp_path / "val.txt"
    names.write_text("# held out\nimg2.png\nimg0.png  # a comment\n\n")
    pair_names = tmp_path / "pairs.txt"
    pair_names.write_text("p1.png\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "tasks:\n"
        f"  c: {{clean: {data / 'clean'}, degradation: none, only: {names}}}\n"
        f"  p: {{paired: {data / 'pairs'}, only: {pair_names}}}\n"
    )
    clean_task, paired_task = ev.load_suite(suite).tasks
    samples = list(ev.iter_samples(clean_task))
    assert [s.name for s in samples] == ["img0", "img2"]
    for s in samples:  # the identity task: the input is the clean photo itself
        assert np.array_equal(metrics.quantize_u8(s.lq), s.gt_u8)
    assert [s.name for s in ev.iter_samples(paired_task)] == ["p1"]
    names.write_text("nothing_here.png\n")
    with pytest.raises(DataError, match="on its list"):
        list(ev.iter_samples(clean_task))
    with pytest.raises(DataError, match="no such name list"):
        ev.make_task("x", "clean", data / "clean", degradation="none", only=tmp_path / "missing.txt")


def test_base_makes_the_target_of_a_clean_task(data, tmp_path):
    from ramir.data.variants import zoom

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "tasks:\n"
        f"  z: {{clean: {data / 'clean'}, base: {{kind: zoom, scale: 2}}, degradation: none}}\n"
        f"  zn: {{clean: {data / 'clean'}, base: {{kind: zoom, scale: 2}}, degradation: noise, level: 25}}\n"
    )
    z, zn = ev.load_suite(suite).tasks
    assert "after zoom scale=2" in z.describe()
    for s, sn in zip(ev.iter_samples(z), ev.iter_samples(zn), strict=True):
        photo = np.asarray(Image.open(data / "clean" / f"{s.name}.png"), dtype=np.float32) / 255.0
        assert np.array_equal(s.gt_u8, metrics.quantize_u8(zoom(photo, 2.0)))  # the enlarged photo
        assert np.array_equal(metrics.quantize_u8(s.lq), s.gt_u8)  # degradation none: the target itself
        assert np.array_equal(sn.gt_u8, s.gt_u8) and not np.array_equal(metrics.quantize_u8(sn.lq), sn.gt_u8)
    with pytest.raises(ConfigError, match="'base' is for a clean task"):
        ev.make_task("p", "paired", data / "pairs", base={"kind": "zoom"})
    with pytest.raises(ConfigError, match="spec with a kind"):
        ev.make_task("c", "clean", data / "clean", degradation="none", base={"scale": 2})
    with pytest.raises(ConfigError, match="unknown degradation"):
        ev.make_task("c", "clean", data / "clean", degradation="none", base={"kind": "enlarge"})


def test_select_keeps_the_named_suite_tasks(data, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n"
                     f"  n15: {{clean: {data / 'clean'}, degradation: noise, level: 15}}\n"
                     f"  b: {{clean: {data / 'clean'}, degradation: blur}}\n")
    out = tmp_path / "out"
    argv = ["evaluate", "--suite", str(suite), "--select", "b", "--baseline", "input", "--out", str(out)]
    assert main(argv) == 0
    assert {r["task"] for r in csv.DictReader((out / "per_image.csv").open())} == {"b"}
    assert main(["evaluate", "--suite", str(suite), "--select", "x", "--baseline", "input",
                 "--out", str(tmp_path / "o2")]) == 2
    assert "no task 'x'" in capsys.readouterr().err
