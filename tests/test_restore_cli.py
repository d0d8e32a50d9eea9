"""``ramir restore``: formats in = formats out, one line per bad file, names that never clobber anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ramir
from ramir.cli import main
from ramir.errors import ImageError
from ramir.inference import NO_DEFAULT_MODEL, default_weights

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A tiny RAM-SwinIR checkpoint file (window 8)."""
    from ramir.checkpoints import save_checkpoint

    torch.manual_seed(0)
    net = ramir.create_model("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2])
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, net)
    return str(path)


def _img(path: Path, mode: str = "RGB", size=(41, 27), **save) -> Path:
    w, h = size
    if mode == "I;16":
        im = Image.fromarray(RNG.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        im = Image.fromarray(RNG.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
        im = im.convert("RGB").quantize(64) if mode == "P" else im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **save)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["restore", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _ramir_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ramir: ") and "note:" not in line]


# ---------------------------------------------------------------------------------------------- formats
def test_formats_modes_and_structure_are_kept(tmp_path, capsys, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in"
    files = {
        "a.png": _img(src / "a.png"),
        "b.jpg": _img(src / "b.jpg", quality=90),
        "c.tif": _img(src / "c.tif", "RGBA"),
        "d.webp": _img(src / "d.webp", lossless=True),
        "e.bmp": _img(src / "e.bmp", "L"),
        "deep/f.png": _img(src / "deep" / "f.png", "LA", size=(33, 17)),
        "deep/g.png": _img(src / "deep" / "g.png", "I;16"),
        "deep/h.png": _img(src / "deep" / "h.png", "P"),
    }
    code, out, err = _run(capsys, "in", "-r", "--model", model, "--tile", "16", "--overlap", "8")
    assert code == 0, err
    assert "restored/" in err  # the default output folder is announced
    assert "restored 8, skipped 0, failed 0" in out
    for rel, path in files.items():
        res = tmp_path / "restored" / rel
        assert res.is_file(), rel
        before, after = Image.open(path), Image.open(res)
        assert after.format == before.format and after.size == before.size
        assert after.mode == ("RGB" if before.mode == "P" else before.mode)
        if "A" in before.mode:
            assert np.array_equal(np.asarray(after)[..., -1], np.asarray(before)[..., -1])
        assert not np.array_equal(np.asarray(after), np.asarray(before.convert(after.mode)))  # it did restore
    assert "palette" in err  # the P -> RGB conversion is said


def test_compare_writes_side_by_side(tmp_path, capsys, model):
    _img(tmp_path / "x.jpg", size=(40, 24))
    code, _, err = _run(capsys, str(tmp_path / "x.jpg"), "-o", str(tmp_path / "out"), "--model", model,
                        "--compare", "--precision", "bf16")
    assert code == 0, err
    comp = Image.open(tmp_path / "out" / "x_compare.png")
    assert comp.format == "PNG" and comp.size == (2 * 40 + 4, 24)
    assert Image.open(tmp_path / "out" / "x.jpg").format == "JPEG"


# ------------------------------------------------------------------------------------------- bad inputs
def test_every_bad_input_is_one_line_and_the_rest_still_runs(tmp_path, capsys, model, monkeypatch):
    d = tmp_path / "in"
    good = [_img(d / "good1.png"), _img(d / "good2.jpg")]
    corrupt = bytearray(_img(d / "corrupt.png").read_bytes())
    corrupt[40:80] = bytes(40)
    (d / "corrupt.png").write_bytes(bytes(corrupt))
    locked = _img(d / "locked.png")
    import builtins

    import ramir.imageio

    def guarded_open(file, *args, **kwargs):  # the kernel's refusal, also when the tests run as root
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied")
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(ramir.imageio, "open", guarded_open, raising=False)
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image at all")
    _img(d / "big.png")
    data = (d / "big.png").read_bytes()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    (d / "big.png").unlink()
    tiny = _img(d / "tiny.png", size=(6, 5))  # smaller than the window of 8: padded, restored, cropped
    _img(d / "huge.png", size=(120, 100))
    code, out, err = _run(capsys, str(d), str(tmp_path / "missing.png"), str(tmp_path / "nomatch*.png"),
                          "-o", str(tmp_path / "out"), "--model", model, "--max-pixels", "10000")
    assert code == 1
    lines = _ramir_lines(err)
    reasons = {
        "empty.png": "empty file", "text.png": "not an image", "trunc.png": "truncated",
        "huge.png": "above the limit",
        "missing.png": "no such file", "nomatch*.png": "no files match", "corrupt.png": "corrupt",
        "locked.png": "permission denied",
    }
    for name, reason in reasons.items():
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1 and reason in hits[0], (name, lines)
    assert "Traceback" not in err
    assert all((tmp_path / "out" / g.name).is_file() for g in [*good, tiny])
    assert Image.open(tmp_path / "out" / "tiny.png").size == (6, 5)
    assert "restored 3, skipped 0, failed 8" in out


def test_output_option_naming_a_file_and_tiny_tiles_are_refused_up_front(tmp_path, capsys, model):
    good = _img(tmp_path / "good.png")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for target in (afile, good):  # an existing file, or the input itself
        code, _, err = _run(capsys, str(good), "-o", str(target), "--model", model, "--overwrite")
        assert code == 2 and "is a file; -o names the output folder" in err
        assert len(err.strip().splitlines()) == 1
    assert afile.read_text() == "keep me"
    bad = [
        (["restore", str(good), "--tile", "8"], "at least 16 pixels"),
        (["restore", str(good), "--tile", "3"], "at least 16 pixels"),
        (["serve", "--tile", "8"], "at least 16 pixels"),
        (["evaluate", "--tile", "4"], "at least 16 pixels"),
        (["restore", str(good), "--max-memory", "lots"], "expected a size like 2G"),
        (["restore", str(good), "--max-memory", "10M"], "at least 256M"),
    ]
    for argv, message in bad:
        with pytest.raises(SystemExit) as exc:
            main([*argv, "-o", str(tmp_path / "o")] if argv[0] == "restore" else argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    code, _, err = _run(capsys, str(good), "-o", str(tmp_path / "o"), "--model", model, "--max-memory", "2G")
    assert code == 0 and (tmp_path / "o" / "good.png").exists(), err


def test_folder_hint_names_sub_folders_only_when_there_are_some(tmp_path, capsys, model):
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    flat.mkdir()
    (flat / "notes.txt").write_text("x")
    _img(nested / "sub" / "a.png")
    _, _, err = _run(capsys, str(flat), str(nested), "-o", str(tmp_path / "out"), "--model", model)
    lines = _ramir_lines(err)
    assert any(ln.endswith("flat: no image files in this folder") for ln in lines), lines
    hint = "nested: no image files in this folder (use -r for its sub-folders)"
    assert any(hint in ln for ln in lines), lines


def test_debug_shows_the_exception(tmp_path, model):
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(ImageError):
        main(["--debug", "restore", str(tmp_path / "bad.png"), "-o", str(tmp_path / "o"), "--model", model])


def test_no_model_and_architecture_names_exit_2(tmp_path, capsys, no_default_model):
    _img(tmp_path / "a.png")
    code, _, err = _run(capsys, str(tmp_path / "a.png"), "-o", str(tmp_path / "o"))
    assert code == 2 and err.strip() == f"ramir: error: {NO_DEFAULT_MODEL}"
    assert not (tmp_path / "o").exists()
    code, _, err = _run(capsys, str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", "ram-swinir")
    assert code == 2 and "not trained weights" in err
    assert not (tmp_path / "o").exists()


def test_onnxruntime_backend_from_the_cli(tmp_path, capsys, model, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("RAMIR_CACHE", str(tmp_path / "cache"))
    from ramir.checkpoints import save_checkpoint

    src = _img(tmp_path / "a.png")
    naf = tmp_path / "naf.safetensors"
    torch.manual_seed(0)
    save_checkpoint(naf, ramir.create_model("nafnet-s", width=8))
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "t"), "--model", str(naf))
    assert code == 0, err
    code, out, err = _run(capsys, str(src), "-o", str(tmp_path / "o"), "--model", str(naf),
                        "--backend", "onnxruntime")
    assert code == 0, err
    # the one-time export says what it does, and the summary counts it
    assert "exporting the network to ONNX for onnxruntime (once; cached in" in err
    assert "exporting to ONNX, once)" in out
    code, out, err = _run(capsys, str(src), "-o", str(tmp_path / "o2"), "--model", str(naf),
                          "--backend", "onnxruntime")
    assert code == 0 and "ONNX" not in err + out  # cached: nothing to say
    torch_out = np.asarray(Image.open(tmp_path / "t" / "a.png"), dtype=np.int16)
    ort_out = np.asarray(Image.open(tmp_path / "o" / "a.png"), dtype=np.int16)
    assert np.abs(torch_out - ort_out).max() <= 1  # 8-bit rounding of outputs equal within 1e-4
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "b"), "--model", str(naf), "--backend",
                        "onnxruntime", "--precision", "bf16")
    assert code == 2 and len(_ramir_lines(err)) == 1 and "fp32" in err
    # SwinIR exports with symbolic sizes too, and restores as PyTorch does
    for backend in ("torch", "onnxruntime"):
        code, _, err = _run(capsys, str(src), "-o", str(tmp_path / backend), "--model", model,
                            "--backend", backend)
        assert code == 0, err
    swin = [np.asarray(Image.open(tmp_path / b / "a.png"), dtype=np.int16) for b in ("torch", "onnxruntime")]
    assert np.abs(swin[0] - swin[1]).max() <= 1
    # a network the exporter cannot trace: one line that says what to do, nothing written

    def untraceable(*args, **kwargs):
        raise RuntimeError("Cannot view a tensor with shape [s0, 64]\nmore exporter detail")

    monkeypatch.setattr("ramir.export.export_onnx", untraceable)
    monkeypatch.setenv("RAMIR_CACHE", str(tmp_path / "cache2"))
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path / "b"), "--model", model,
                        "--backend", "onnxruntime")
    assert code == 2 and "--backend torch" in err and "more exporter detail" not in err
    failures = [ln for ln in _ramir_lines(err) if "exporting" not in ln]
    assert len(failures) == 1 and "--backend torch" in failures[0]
    assert not (tmp_path / "b").exists()


def test_auto_backend_uses_onnxruntime_for_the_embedded_model_on_cpu(tmp_path, capsys, monkeypatch):
    """Default `--backend auto`: onnxruntime for the embedded model on the CPU (measured ~3x faster),
    PyTorch for any other model or precision; the two give the same image."""
    from ramir.checkpoints import load_network
    from ramir.inference import auto_backend

    pytest.importorskip("onnxruntime")
    if default_weights() is None:
        pytest.skip("this build ships no default model")
    net, cpu = load_network(default_weights()), torch.device("cpu")
    assert auto_backend(net, cpu, embedded=True) == "onnxruntime"
    assert auto_backend(net, cpu, embedded=False) == "torch"  # --model: PyTorch
    assert auto_backend(net, cpu, precision="bf16", embedded=True) == "torch"
    assert auto_backend(net, cpu, twin_mask=True, embedded=True) == "torch"
    assert auto_backend(net, torch.device("cuda"), embedded=True) == "torch"
    # the policy lives in ramir.load: the library's default gets it too (experts export on first use)
    assert ramir.load(device="cpu").backend == "onnxruntime"
    assert ramir.load(default_weights(), device="cpu").backend == "torch"
    monkeypatch.setenv("RAMIR_CACHE", str(tmp_path / "cache"))
    src = _img(tmp_path / "a.png", size=(67, 45))
    assert _run(capsys, str(src), "-o", str(tmp_path / "auto"), "--device", "cpu")[0] == 0
    steps = ramir.load(device="cpu", backend="torch")  # the experts the chain applies to this image
    steps.restore(np.asarray(Image.open(src).convert("RGB")))
    applied = len(steps.last_decisions[0].steps)
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == applied >= 1  # one graph per expert
    code = _run(capsys, str(src), "-o", str(tmp_path / "torch"), "--device", "cpu", "--backend", "torch")[0]
    assert code == 0
    a = np.asarray(Image.open(tmp_path / "auto" / "a.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "torch" / "a.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1


# ------------------------------------------------------------------------------------------------ names
def test_names_suffix_skip_overwrite(tmp_path, capsys, model):
    src = _img(tmp_path / "in" / "photo.v2.png")
    out = tmp_path / "out"
    base = ["-o", str(out), "--model", model]
    assert _run(capsys, str(src), *base)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo.v2.png"]  # never photo.v2.png.png
    assert _run(capsys, str(src), *base, "--suffix", "_restored")[0] == 0
    assert (out / "photo.v2_restored.png").is_file()

    target = out / "photo.v2.png"
    target.write_bytes(b"keep me")
    code, o, err = _run(capsys, str(src), *base)  # existing output: skipped with a message, not a failure
    assert code == 0 and "skipped" in err and "--overwrite" in err and "skipped 1" in o
    assert target.read_bytes() == b"keep me"
    code, o, err = _run(capsys, str(src), *base, "--skip-existing")  # quietly
    assert code == 0 and _ramir_lines(err) == [] and "skipped 1" in o
    assert target.read_bytes() == b"keep me"
    code, o, _ = _run(capsys, str(src), *base, "--overwrite")
    assert code == 0 and "restored 1" in o
    assert Image.open(target).size == (41, 27)
    assert sorted(p.name for p in out.iterdir()) == ["photo.v2.png", "photo.v2_restored.png"]  # no temp files


def test_never_writes_over_an_input(tmp_path, capsys, model):
    src = _img(tmp_path / "a.png")
    before = src.read_bytes()
    code, _, err = _run(capsys, str(src), "-o", str(tmp_path), "--model", model, "--overwrite")
    assert code == 1 and "refusing to write over an input" in err
    assert src.read_bytes() == before
    os.link(src, tmp_path / "alias.png")  # a hard link is the same file under another name
    other = tmp_path / "o"
    other.mkdir()
    os.symlink(src, other / "a.png")
    code, _, err = _run(capsys, str(src), "-o", str(other), "--model", model, "--overwrite")
    assert code == 1 and "refusing" in err and src.read_bytes() == before


def test_globs_expanded_in_python_keep_structure(tmp_path, capsys, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _img(tmp_path / "shots" / "a.png")
    _img(tmp_path / "shots" / "day" / "b.png")
    _img(tmp_path / "shots" / "day" / "c.jpg")
    code, o, err = _run(capsys, "shots/**/*.png", "-r", "-o", "out", "--model", model)
    assert code == 0, err
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "day" / "b.png").is_file()
    assert not (tmp_path / "out" / "day" / "c.jpg").exists() and "restored 2" in o


def test_same_output_from_two_inputs_is_refused(tmp_path, capsys, model):
    a, b = _img(tmp_path / "x" / "same.png"), _img(tmp_path / "y" / "same.png")
    code, o, err = _run(capsys, str(a), str(b), "-o", str(tmp_path / "out"), "--model", model)
    assert code == 1 and "also the output of" in err and "restored 1" in o


def test_entry_point_runs(tmp_path, model):
    """The installed command, in a fresh process (exit status and one-line errors)."""
    _img(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ramir", "restore", "a.png", "b.png", "--model", model, "--threads", "1"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "ramir: b.png: empty file (0 bytes)" in proc.stderr
    assert (tmp_path / "restored" / "a.png").is_file()
    assert "restored 1, skipped 0, failed 1" in proc.stdout
