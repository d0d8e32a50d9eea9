"""ramir.imageio: every common format and mode reads to float RGB and writes back faithfully."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from ramir.errors import ImageError
from ramir.imageio import LoadedImage, compare_image, read_image, rgb_to_grey, write_image

RNG = np.random.default_rng(1234)
W, H = 37, 23  # odd on purpose


def _u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _u16(*shape: int) -> np.ndarray:
    return RNG.integers(0, 65536, size=shape, dtype=np.uint16)


@pytest.fixture(scope="module")
def icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _invert(loaded: LoadedImage) -> np.ndarray:
    """A 'restoration' that changes every pixel, so a writer that copies its input cannot pass."""
    return 1.0 - loaded.rgb


# (name, builder of (pil image or None, raw array written by OpenCV or None), save kwargs, lossless)
def _cases():
    rgb, rgba = _u8(H, W, 3), _u8(H, W, 4)
    grey, la = _u8(H, W), _u8(H, W, 2)
    return [
        ("rgb.png", Image.fromarray(rgb), {}, True),
        ("rgb.jpg", Image.fromarray(rgb), {"quality": 100, "subsampling": 0}, False),
        ("rgb.tif", Image.fromarray(rgb), {"compression": "tiff_lzw"}, True),
        ("rgb.webp", Image.fromarray(rgb), {"lossless": True}, True),
        ("rgb.bmp", Image.fromarray(rgb), {}, True),
        ("rgba.png", Image.fromarray(rgba, "RGBA"), {}, True),
        ("rgba.tif", Image.fromarray(rgba, "RGBA"), {}, True),
        ("rgba.webp", Image.fromarray(rgba, "RGBA"), {"lossless": True}, True),
        ("grey.png", Image.fromarray(grey, "L"), {}, True),
        ("grey.jpg", Image.fromarray(grey, "L"), {"quality": 100}, False),
        ("grey.tif", Image.fromarray(grey, "L"), {}, True),
        ("la.png", Image.fromarray(la, "LA"), {}, True),
        ("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), {"quality": 100}, False),
        ("cmyk.tif", Image.fromarray(rgb).convert("CMYK"), {}, True),
        ("grey16.png", Image.fromarray(_u16(H, W)), {}, True),
        ("grey16.tif", Image.fromarray(_u16(H, W)), {}, True),
    ]


EXPECTED_MODE = {"cmyk": "CMYK", "rgba": "RGBA", "rgb": "RGB", "grey16": "I;16", "grey": "L", "la": "LA"}


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_round_trip_keeps_mode_size_alpha_and_pixels(tmp_path, case):
    name, im, kwargs, lossless = case
    src = tmp_path / name
    im.save(src, **kwargs)
    loaded = read_image(src)
    assert loaded.size == (W, H) and loaded.rgb.shape == (H, W, 3) and loaded.rgb.dtype == np.float32
    assert loaded.rgb.min() >= 0.0 and loaded.rgb.max() <= 1.0
    assert loaded.mode == im.mode
    assert loaded.bit_depth == (16 if "16" in name else 8)
    # what the network sees is the file's pixels
    ref = np.asarray(im.convert("RGB") if im.mode in ("CMYK", "LA", "RGBA") else im).astype(np.float32)
    ref = ref / (65535.0 if "16" in name else 255.0)
    if ref.ndim == 2:
        ref = np.repeat(ref[..., None], 3, axis=2)
    tol = 0 if lossless else 0.05
    assert np.abs(loaded.rgb - ref).max() <= tol + 1e-6

    out = tmp_path / ("out_" + name)
    write_image(out, _invert(loaded), like=loaded)
    back = Image.open(out)
    assert back.format == Image.open(src).format and back.size == (W, H)
    assert back.mode == EXPECTED_MODE[name.split(".")[0]]
    again = read_image(out)
    if loaded.alpha is not None:
        assert again.alpha is not None and again.alpha.dtype == loaded.alpha.dtype
        assert np.array_equal(again.alpha, loaded.alpha)  # alpha untouched, bit for bit
    expected = 1.0 - loaded.rgb
    if loaded.mode in ("L", "LA", "I;16"):
        expected = np.repeat(rgb_to_grey(expected)[..., None], 3, axis=2)
    step = 1 / 65535 if loaded.bit_depth == 16 else 1 / 255
    assert np.abs(again.rgb - expected).max() <= (step if lossless else 0.1) + 1e-6


@pytest.mark.parametrize("ext", ["png", "tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_keeps_all_bits_and_icc(tmp_path, ext, channels, icc):
    raw = _u16(70, W, channels)  # Pillow alone would decode this to 8 bits; 70 rows = 2 TIFF strips
    src = tmp_path / f"c16.{ext}"
    assert cv2.imwrite(str(src), raw)
    loaded = read_image(src)
    assert loaded.bit_depth == 16 and loaded.mode == ("RGBA" if channels == 4 else "RGB")
    rgb = raw[..., 2::-1].astype(np.float64) / 65535.0
    assert np.abs(loaded.rgb - rgb).max() < 1e-6
    loaded.icc_profile = icc
    out = tmp_path / f"out.{ext}"
    write_image(out, _invert(loaded), like=loaded)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == raw.shape
    assert np.array_equal(back[..., 2::-1], 65535 - raw[..., 2::-1])  # exact: 1 - x at 16 bits
    if channels == 4:
        assert np.array_equal(back[..., 3], raw[..., 3])
    assert Image.open(out).info.get("icc_profile") == icc


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def test_sixteen_bit_grey_alpha_png(tmp_path):
    ga = _u16(H, W, 2)
    rows = b"".join(b"\x00" + ga[y].astype(">u2").tobytes() for y in range(H))
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 4, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    (tmp_path / "ga16.png").write_bytes(png)
    loaded = read_image(tmp_path / "ga16.png")
    assert loaded.mode == "LA" and loaded.bit_depth == 16 and np.array_equal(loaded.alpha, ga[..., 1])
    assert np.abs(loaded.rgb[..., 1] * 65535 - ga[..., 0]).max() < 0.01
    write_image(tmp_path / "out.png", _invert(loaded), like=loaded)
    again = read_image(tmp_path / "out.png")
    assert again.mode == "LA" and again.bit_depth == 16 and np.array_equal(again.alpha, ga[..., 1])
    assert np.array_equal(np.rint(again.rgb[..., 0] * 65535).astype(np.uint16), 65535 - ga[..., 0])


def test_palette_is_written_as_rgb_and_says_so(tmp_path):
    rgb = _u8(H, W, 3)
    p = Image.fromarray(rgb).quantize(colors=32)
    p.save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert loaded.mode == "P" and any("palette" in n for n in loaded.notes)
    assert np.array_equal(np.rint(loaded.rgb * 255).astype(np.uint8), np.asarray(p.convert("RGB")))
    write_image(tmp_path / "out.png", loaded.rgb, like=loaded)
    assert Image.open(tmp_path / "out.png").mode == "RGB"

    pt = Image.fromarray(rgb).quantize(colors=32)
    pt.info["transparency"] = 0
    pt.save(tmp_path / "pt.png", transparency=0)
    loaded = read_image(tmp_path / "pt.png")
    assert loaded.alpha is not None and set(np.unique(loaded.alpha)) <= {0, 255}
    write_image(tmp_path / "out_t.png", loaded.rgb, like=loaded)
    back = Image.open(tmp_path / "out_t.png")
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back)[..., 3], loaded.alpha)


def test_exif_orientation_is_applied_and_reset(tmp_path):
    rgb = _u8(10, 16, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "ramir-test-camera"
    Image.fromarray(rgb).save(tmp_path / "o6.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    loaded = read_image(tmp_path / "o6.jpg")
    upright = np.rot90(rgb, k=-1)  # what a viewer shows
    assert loaded.size == (10, 16) and loaded.rgb.shape == (16, 10, 3)
    assert np.abs(loaded.rgb * 255 - upright).mean() < 4  # JPEG noise only, not a rotated image
    write_image(tmp_path / "out.jpg", loaded.rgb, like=loaded)
    back = Image.open(tmp_path / "out.jpg")
    assert back.size == (10, 16)  # stored upright
    tags = back.getexif()
    assert tags.get(0x0112, 1) == 1 and tags.get(0x010F) == "ramir-test-camera"
    assert np.abs(np.asarray(back).astype(float) - upright).mean() < 5


@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "webp"])
def test_icc_profile_is_kept(tmp_path, ext, icc):
    Image.fromarray(_u8(H, W, 3)).save(tmp_path / f"a.{ext}", icc_profile=icc)
    loaded = read_image(tmp_path / f"a.{ext}")
    assert loaded.icc_profile == icc
    write_image(tmp_path / f"out.{ext}", loaded.rgb, like=loaded)
    assert Image.open(tmp_path / f"out.{ext}").info.get("icc_profile") == icc


def test_jpeg_written_at_quality_95(tmp_path):
    Image.fromarray(_u8(64, 64, 3)).save(tmp_path / "a.jpg", quality=50)
    loaded = read_image(tmp_path / "a.jpg")
    write_image(tmp_path / "o.jpg", loaded.rgb, like=loaded)
    Image.fromarray(_u8(8, 8, 3)).save(tmp_path / "q95.jpg", quality=95)
    assert Image.open(tmp_path / "o.jpg").quantization == Image.open(tmp_path / "q95.jpg").quantization


def test_write_is_atomic_and_never_overwrites_by_default(tmp_path):
    Image.fromarray(_u8(H, W, 3)).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    target = tmp_path / "out" / "b.png"
    write_image(target, loaded.rgb, like=loaded)
    before = target.read_bytes()
    with pytest.raises(ImageError, match="exists"):
        write_image(target, 1 - loaded.rgb, like=loaded)
    assert target.read_bytes() == before
    write_image(target, 1 - loaded.rgb, like=loaded, overwrite=True)
    assert target.read_bytes() != before
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.png"]  # no temporary files left


def _truncated(tmp_path, ext):
    big = Image.fromarray(_u8(200, 300, 3))
    full = tmp_path / f"full.{ext}"
    big.save(full)
    data = full.read_bytes()
    bad = tmp_path / f"trunc.{ext}"
    bad.write_bytes(data[: len(data) * 2 // 3])
    return bad


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda d: d / "missing.png", {}, "no such file"),
        (lambda d: d, {}, "is a directory"),
        (lambda d: _write(d / "empty.png", b""), {}, "empty file"),
        (lambda d: _write(d / "text.png", b"hello, not pixels"), {}, "not an image"),
        (lambda d: _truncated(d, "png"), {}, "truncated PNG"),
        (lambda d: _truncated(d, "jpg"), {}, "truncated JPEG"),
        (lambda d: _corrupt_png(d), {}, "corrupt"),
        (lambda d: _save(d, 40, 30), {"max_pixels": 1000}, "above the limit"),
        (lambda d: _save(d, 40, 30), {"max_pixels": 100}, "above the limit"),  # Pillow's bomb guard path
        (lambda d: _save(d, 40, 6), {"min_size": 8}, "smaller than the network's window of 8"),
    ],
    ids=["missing", "directory", "empty", "not-image", "trunc-png", "trunc-jpg", "corrupt", "max-pixels",
         "bomb", "too-small"],
)
def test_bad_inputs_raise_one_line_image_errors(tmp_path, make, kwargs, match):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=match) as info:
        read_image(path, **kwargs)
    assert "\n" not in str(info.value)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _save(d, w, h):
    p = d / f"img_{w}x{h}.png"
    Image.fromarray(_u8(h, w, 3)).save(p)
    return p


def _corrupt_png(d):
    p = d / "corrupt.png"
    Image.fromarray(_u8(H, W, 3)).save(p)
    data = bytearray(p.read_bytes())
    data[40:80] = bytes(40)  # smash the IDAT header and the first compressed bytes
    p.write_bytes(bytes(data))
    return p


def test_unreadable_file(tmp_path, monkeypatch):
    p = _save(tmp_path, 20, 20)
    if os.name == "posix" and os.geteuid() != 0:
        p.chmod(0)
    else:  # root reads everything: simulate the refusal the kernel would give a user
        import ramir.imageio

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(ramir.imageio, "open", denied, raising=False)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            read_image(p)
    finally:
        p.chmod(0o644)


def test_limit_above_pillows_own_guard_is_honoured(tmp_path, monkeypatch):
    p = _save(tmp_path, 40, 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this image
    assert read_image(p, max_pixels=10_000).size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored afterwards


def test_compare_image_is_side_by_side():
    a, b = np.zeros((5, 7, 3), np.float32), np.ones((5, 7, 3), np.float32)
    im = np.asarray(compare_image(a, b, separator=3))
    assert im.shape == (5, 17, 3)
    assert (im[:, :7] == 0).all() and (im[:, 10:] == 255).all() and (im[:, 7:10] == 128).all()
