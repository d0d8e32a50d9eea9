"""Reading and writing images faithfully: what comes in is what goes out, only restored.

The networks see float RGB in [0, 1]; everything else about a file — its size, mode, bit depth, alpha,
ICC profile, EXIF, format — is kept on a :class:`LoadedImage` and put back by :func:`write_image`.

What is kept, per mode and format:

- RGB / RGBA / L / LA / CMYK / 16-bit grey ("I;16") come back in the same mode. Grey images are restored
  as RGB (the grey value in all three channels) and converted back with ITU-R 601 luma weights.
- Alpha is never passed through the network: it is stored untouched and re-attached bit for bit.
- 16-bit RGB(A) and grey+alpha PNG and 16-bit RGB(A) TIFF, which Pillow decodes only to 8 bits, are read
  through OpenCV and written by ramir itself (PNG: OpenCV or a minimal encoder, plus the ICC/EXIF chunks;
  TIFF: a small deflate writer keeping the ICC profile, not EXIF), so the output keeps all 16 bits.
- Palette images ("P") are restored in RGB(A) and written back as RGB(A) (a GIF is re-quantised);
  CMYK is converted to RGB for the network and back to CMYK for JPEG/TIFF.
- EXIF orientation is applied on read; the output is written upright with the orientation tag reset to 1.
- JPEG is written at quality 95 with the input's chroma subsampling; WebP lossless stays lossless.

Every problem a user can cause raises :class:`ramir.errors.ImageError` with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ramir.errors import ImageError
from ramir.fileio import atomic_path

DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".webp", ".bmp", ".gif")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of Pillow's convert("L")
ORIENTATION_TAG = 0x0112
JPEG_QUALITY = 95

# file signatures, to tell "corrupt image" from "not an image" when Pillow cannot identify a file
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_PIL_GLOBALS = threading.Lock()  # Pillow's pixel limit and truncation flag are module globals
# Pillow logs some refusals (a TIFF's absurd SamplesPerPixel) at ERROR level besides raising; with logging
# unconfigured Python prints them on stderr, a second line next to our one-line ImageError. A NullHandler
# stops only that fallback: an application that configures logging still receives them.
logging.getLogger("PIL").addHandler(logging.NullHandler())


@dataclass
class LoadedImage:
    """An image as the network sees it (``rgb``) plus everything needed to write it back."""

    rgb: np.ndarray  # float32 (H, W, 3) in [0, 1], upright
    alpha: np.ndarray | None  # (H, W) uint8 / uint16, untouched
    mode: str  # the original Pillow mode ("RGB", "L", "I;16", "P", "CMYK", ...)
    bit_depth: int  # 8 or 16 bits per sample
    format: str  # Pillow format name: "PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF"
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already reset to 1
    size: tuple[int, int] = (0, 0)  # (width, height), upright
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # format hints: dpi, subsampling, lossless, ...
    notes: list[str] = field(default_factory=list)  # what will not round-trip exactly, for the user

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


# ----------------------------------------------------------------------------------------------- reading
def read_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = 1,
) -> LoadedImage:
    """Decode ``path`` completely (truncation is detected, not padded with grey) into a :class:`LoadedImage`.

    ``max_pixels`` refuses huge images before decoding them (``None``: no limit); ``min_size`` refuses
    images whose width or height is smaller (a network's window).
    """
    path = Path(path)
    _check_readable(path)
    with _PIL_GLOBALS:
        previous = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        # our own limit replaces Pillow's decompression-bomb guard (which would otherwise fire at 179 MP)
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max(int(max_pixels), 1)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return _read(path, max_pixels, min_size)
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for sig, fmt in _SIGNATURES.items():
        if head.startswith(sig):
            return fmt
    return None


def _mp(pixels: int | None) -> str:
    return "no limit" if pixels is None else f"{pixels / 1e6:.3g} MP"


def _too_big(path: Path, max_pixels: int | None) -> str:
    return f"{path}: image is above the limit of {_mp(max_pixels)} (raise it with --max-pixels)"


def _check_size(path: Path, width: int, height: int, max_pixels: int | None, min_size: int) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} = {_mp(width * height)} is above the limit of "
            f"{_mp(max_pixels)} (raise it with --max-pixels)"
        )
    if min(width, height) < min_size:
        raise ImageError(f"{path}: {width}x{height} is smaller than the network's window of {min_size} px")


def _read(path: Path, max_pixels: int | None, min_size: int) -> LoadedImage:
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own guard fires at twice our limit, before _check_size
        raise ImageError(_too_big(path, max_pixels)) from None
    except UnidentifiedImageError:
        fmt = _sniff(path)
        if fmt == "TIFF":  # a TIFF Pillow cannot parse (e.g. 12-bit RGB): OpenCV may
            declared = _tiff_size(path)
            if declared is not None:  # OpenCV allocates the declared size before reading a byte of it
                _check_size(path, *declared, max_pixels, min_size)
            return _read_with_cv2(path, None, max_pixels, min_size)
        if fmt is not None:
            raise ImageError(f"{path}: corrupt or truncated {fmt} file") from None
        raise ImageError(f"{path}: not an image (unrecognised format)") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open: {exc}") from None
    except (ValueError, EOFError, zlib.error) as exc:  # e.g. a PNG text/ICC chunk inflating past Pillow's cap
        raise ImageError(f"{path}: corrupt {_sniff(path) or 'image'} file ({exc})") from None

    with im:
        _check_size(path, im.width, im.height, max_pixels, min_size)
        c_messages: list[str] = []
        try:
            with _c_stderr(c_messages):
                im.load()
        except Image.DecompressionBombError:
            raise ImageError(_too_big(path, max_pixels)) from None
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
            if "truncat" in str(exc).lower():
                raise ImageError(f"{path}: truncated {im.format or 'image'} file") from None
            # libtiff's own line ("module: what went wrong") says more than Pillow's "decoder error -2"
            detail = "; ".join([str(exc), *(m.split(": ", 1)[-1] for m in c_messages[:1])])
            raise ImageError(f"{path}: corrupt {im.format or 'image'} file ({detail})") from None
        if _needs_cv2(im):
            return _read_with_cv2(path, im, max_pixels, min_size)
        try:
            loaded = from_pil(im)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None
    loaded.path = path
    return loaded


@contextlib.contextmanager
def _c_stderr(lines: list[str] | None = None) -> Iterator[None]:
    """Divert what C decoders print straight to file descriptor 2 (libtiff inside Pillow, OpenCV's log):
    on a user's terminal those lines would break the one-line-per-bad-file promise of ``ramir restore``.
    They are appended to ``lines`` (the caller may quote them in its error), else dropped. Used under
    ``_PIL_GLOBALS`` only: what another thread writes to fd 2 meanwhile is diverted too."""
    lines = [] if lines is None else lines
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable file descriptor 2 (e.g. pythonw): nothing to protect
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        os.close(saved)


def _tiff_size(path: Path) -> tuple[int, int] | None:
    """(ImageWidth, ImageLength) of a TIFF's first directory, or None when they cannot be read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            order = "<" if head[:2] == b"II" else ">"
            fh.seek(struct.unpack(order + "I", head[4:8])[0])
            count = struct.unpack(order + "H", fh.read(2))[0]
            entries = fh.read(12 * count)
    except (OSError, ValueError, struct.error):
        return None
    size: dict[int, int] = {}
    for i in range(0, len(entries) - 11, 12):
        tag, typ = struct.unpack(order + "HH", entries[i : i + 4])
        if tag in (256, 257) and typ in (3, 4):  # SHORT or LONG, stored in the entry itself
            fmt, end = ("H", i + 10) if typ == 3 else ("I", i + 12)
            size[tag] = struct.unpack(order + fmt, entries[i + 8 : end])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _needs_cv2(im: Image.Image) -> bool:
    """True for 16-bit colour (or grey+alpha) files, which Pillow silently reduces to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return False
    if im.format == "PNG" and im.filename:
        with open(im.filename, "rb") as fh:
            head = fh.read(26)
        return len(head) == 26 and head[24] == 16  # IHDR bit depth
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b is not None and int(b) > 8 for b in bits)
    return False


def _png_colour_type(path: Path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[25] if len(head) == 26 else -1


def _orientation(exif: Image.Exif | None) -> int:
    try:
        return int(exif.get(ORIENTATION_TAG, 1)) if exif is not None else 1
    except (TypeError, ValueError):
        return 1


def _orient_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.swapaxes(x, 0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _exif_bytes_upright(exif: Image.Exif | None) -> bytes | None:
    if exif is None or len(exif) == 0:
        return None
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    try:
        return exif.tobytes()
    except Exception:  # an EXIF block Pillow cannot re-serialise: drop it rather than fail the image
        return None


def _read_with_cv2(path: Path, im: Image.Image | None, max_pixels: int | None, min_size: int) -> LoadedImage:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    with _c_stderr():  # OpenCV logs a failed decode on stderr; the ImageError below says it in one line
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(f"{path}: corrupt or unsupported {im.format if im else 'TIFF'} file")
    _check_size(path, arr.shape[1], arr.shape[0], max_pixels, min_size)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: unsupported sample type {arr.dtype} (8- and 16-bit images only)")
    bits = 16 if arr.dtype == np.uint16 else 8
    scale = 65535.0 if bits == 16 else 255.0
    exif = im.getexif() if im is not None else None
    orientation = _orientation(exif)
    alpha = None
    if arr.ndim == 2:
        rgb, mode = np.repeat(arr[..., None], 3, axis=2), ("I;16" if bits == 16 else "L")
    elif arr.shape[2] == 4:
        rgb, alpha, mode = arr[..., 2::-1], arr[..., 3], "RGBA"
    else:
        rgb, mode = arr[..., 2::-1], "RGB"
    if alpha is not None and im is not None and im.format == "PNG" and _png_colour_type(path) == 4:
        mode = "LA"  # grey+alpha, which Pillow reports as RGBA and OpenCV expands to BGRA
    rgb = _orient_array(rgb, orientation).astype(np.float32) / scale
    if alpha is not None:
        alpha = _orient_array(alpha, orientation)
    fmt = im.format if im is not None else "TIFF"
    info = im.info if im is not None else {}
    notes = []
    if fmt == "TIFF":
        notes.append("16-bit colour TIFF is written deflate-compressed, without EXIF")
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=alpha,
        mode=mode,
        bit_depth=bits,
        format=fmt,
        icc_profile=info.get("icc_profile") or None,
        exif=_exif_bytes_upright(exif) if fmt != "TIFF" else None,
        size=(rgb.shape[1], rgb.shape[0]),
        path=path,
        info={k: info[k] for k in ("dpi",) if k in info},
        notes=notes,
    )


def from_pil(im: Image.Image) -> LoadedImage:
    """Split a Pillow image into the network's RGB (upright, float32) and what is needed to rebuild it."""
    fmt = im.format or ""
    exif = im.getexif() if fmt in ("JPEG", "PNG", "WEBP", "TIFF", "MPO") else None
    info: dict[str, Any] = {}
    for key in ("dpi", "compression", "transparency"):
        if key in im.info:
            info[key] = im.info[key]
    if fmt in ("JPEG", "MPO"):
        from PIL import JpegImagePlugin

        info["subsampling"] = JpegImagePlugin.get_sampling(im)
    if fmt == "WEBP" and getattr(im, "filename", None):
        info["lossless"] = _webp_is_lossless(Path(im.filename))
    if _orientation(exif) != 1:
        im = ImageOps.exif_transpose(im)  # a new, upright image; info (ICC) is copied
    mode, bits, alpha, notes = im.mode, 8, None, []
    try:
        frames = getattr(im, "n_frames", 1)  # a TIFF parses every directory of its chain to count them
    except Exception:  # a corrupt later one (TypeError "Missing dimensions", SyntaxError, ...): the first
        frames = 1  # page decoded fine; return to it, since the failed parse may have changed size and mode
        im.seek(0)
    if frames > 1:
        notes.append(f"only the first of {frames} frames/pages is restored")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(im).astype(np.float32)
        if mode == "I" and (grey.min() < 0 or grey.max() > 65535):
            notes.append("32-bit integer samples were clipped to 16 bits")
        grey = np.clip(grey, 0, 65535) / 65535.0
        rgb, bits = np.repeat(grey[..., None], 3, axis=2), 16
    elif mode == "F":
        raise ImageError("32-bit floating-point images are not supported (8 and 16 bits only)")
    else:
        if mode == "1":
            work = im.convert("L")
        elif mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in im.info
            work = im.convert("RGBA" if has_alpha else "RGB")
            if fmt != "GIF":
                notes.append(f"palette image is written as {work.mode}")
        elif mode in ("RGB", "RGBA", "L", "LA"):
            work = im
        elif mode == "CMYK":
            work = im.convert("RGB")
            if fmt not in ("JPEG", "TIFF", ""):
                notes.append("CMYK image is written as RGB")
        else:
            work = im.convert("RGBA" if "A" in mode else "RGB")
            notes.append(f"{mode} image is written as {work.mode}")
        arr = np.asarray(work)
        if work.mode in ("RGBA", "LA"):
            alpha = np.array(arr[..., -1])
            arr = arr[..., :-1]
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        rgb = arr.astype(np.float32)
        np.divide(rgb, 255.0, out=rgb)  # in place: a 24-MP image is 288 MB as float32
        if work is not im:
            work.close()
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=alpha,
        mode=mode,
        bit_depth=bits,
        format=fmt,
        icc_profile=im.info.get("icc_profile") or None,
        exif=_exif_bytes_upright(exif) if fmt in ("JPEG", "PNG", "WEBP", "MPO") else None,
        size=(rgb.shape[1], rgb.shape[0]),
        info=info,
        notes=notes,
    )


def _webp_is_lossless(path: Path) -> bool:
    """A WebP file is lossless when its image chunk is VP8L (simple or extended layout)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    pos = 12
    while pos + 8 <= len(head):
        tag, length = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if tag in (b"VP8L", b"VP8 "):
            return tag == b"VP8L"
        pos += 8 + length + (length & 1)
    return False


# ----------------------------------------------------------------------------------------------- writing
def _to_samples(x: np.ndarray, bits: int) -> np.ndarray:
    scale = 65535.0 if bits == 16 else 255.0
    out = np.clip(np.asarray(x, dtype=np.float32) * scale, 0.0, scale)
    np.rint(out, out=out)
    return out.astype(np.uint16 if bits == 16 else np.uint8)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an (..., 3) float array (grey in, restored as RGB, grey out)."""
    return rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2]


def output_mode(like: LoadedImage) -> str:
    """The Pillow mode the restored image is written in (see the module docstring)."""
    m = like.mode
    if m in ("RGB", "RGBA", "L", "LA", "1"):
        return m
    if m in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return "I;16"
    if m == "CMYK" and like.format in ("JPEG", "TIFF", ""):  # "": an in-memory image (Python API)
        return "CMYK"
    return "RGBA" if like.alpha is not None else "RGB"


def to_pil(rgb: np.ndarray, like: LoadedImage, *, keep_palette: bool = False) -> Image.Image:
    """Rebuild a Pillow image in ``like``'s mode from restored float RGB (16-bit colour is not a Pillow mode).

    ``keep_palette`` re-quantises palette images to "P" (the Python API returns the mode it was given).
    """
    if rgb.shape[:2] != (like.size[1], like.size[0]):
        got, want = f"{rgb.shape[1]}x{rgb.shape[0]}", f"{like.size[0]}x{like.size[1]}"
        raise ImageError(f"restored image is {got}, expected {want}")
    mode = output_mode(like)
    if mode == "I;16":
        return Image.fromarray(_to_samples(rgb_to_grey(rgb), 16))  # -> mode "I;16"
    if mode in ("L", "LA", "1"):
        grey = _to_samples(rgb_to_grey(rgb), 8)
        if mode == "LA":
            return Image.fromarray(np.dstack([grey, like.alpha.astype(np.uint8)]), "LA")
        out = Image.fromarray(grey, "L")
        return out.convert("1", dither=Image.Dither.NONE) if mode == "1" else out
    samples = _to_samples(rgb, 8)
    if like.alpha is not None:
        out = Image.fromarray(np.dstack([samples, _alpha8(like.alpha)]), "RGBA")
    else:
        out = Image.fromarray(samples, "RGB")
    if mode == "CMYK":
        return out.convert("CMYK")
    if keep_palette and like.mode == "P" and like.alpha is None:
        return out.quantize(colors=256)
    return out


def _alpha8(alpha: np.ndarray) -> np.ndarray:
    if alpha.dtype == np.uint16:  # only reached when a 16-bit alpha must go into an 8-bit mode
        return (alpha.astype(np.uint32) * 255 + 32767) // 65535
    return alpha.astype(np.uint8)


def write_image(
    path: str | os.PathLike, rgb: np.ndarray, *, like: LoadedImage, overwrite: bool = False
) -> None:
    """Write restored float RGB (H, W, 3) in [0, 1] in ``like``'s format, mode, bit depth, alpha and ICC.

    Atomic: the file appears complete or not at all. An existing file is replaced only with ``overwrite``.
    """
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) RGB array, got shape {tuple(rgb.shape)}")
    fmt = (like.format or _format_from_suffix(path)).upper()
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            if like.bit_depth == 16 and output_mode(like) != "I;16":
                _write_16bit_colour(tmp, rgb, like, fmt)
            else:
                im = to_pil(rgb, like, keep_palette=fmt == "GIF")
                im.save(tmp, format=fmt, **_save_options(like, fmt, im.mode))
    except FileExistsError:
        raise ImageError(f"{path}: already exists (use overwrite)") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{path}: cannot write {fmt}: {exc}") from None


def _format_from_suffix(path: Path) -> str:
    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image format for suffix {path.suffix!r}")
    return fmt


def _save_options(like: LoadedImage, fmt: str, mode: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if like.icc_profile and fmt in ("PNG", "JPEG", "TIFF", "WEBP", "MPO"):
        opts["icc_profile"] = like.icc_profile
    if like.exif and fmt in ("PNG", "JPEG", "WEBP", "MPO"):
        opts["exif"] = like.exif
    if "dpi" in like.info and fmt in ("PNG", "JPEG", "TIFF", "BMP"):
        opts["dpi"] = like.info["dpi"]
    if fmt in ("JPEG", "MPO"):
        opts["quality"] = JPEG_QUALITY
        sub = like.info.get("subsampling", -1)
        if sub in (0, 1, 2) and mode != "L":
            opts["subsampling"] = sub
    elif fmt == "WEBP":
        if like.info.get("lossless"):
            opts["lossless"] = True
        else:
            opts["quality"] = JPEG_QUALITY
    elif fmt == "TIFF":
        comp = like.info.get("compression")
        if comp in ("raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits"):
            opts["compression"] = comp
        elif comp == "jpeg" and mode in ("RGB", "L", "CMYK"):
            opts["compression"], opts["quality"] = "jpeg", JPEG_QUALITY
        elif comp:
            opts["compression"] = "tiff_deflate"
    elif fmt == "PNG" and "transparency" in like.info and mode in ("RGB", "L"):
        t = like.info["transparency"]
        if (isinstance(t, int) and mode == "L") or (isinstance(t, tuple) and mode == "RGB"):
            opts["transparency"] = t  # a colour-key transparency survives only as the same key
    return opts


def _write_16bit_colour(tmp: Path, rgb: np.ndarray, like: LoadedImage, fmt: str) -> None:
    """16-bit RGB(A) / grey+alpha: PNG via OpenCV (or our encoder for grey+alpha) plus our own iCCP/eXIf
    chunks, TIFF via :func:`_tiff16_bytes`."""
    samples = _to_samples(rgb_to_grey(rgb)[..., None] if like.mode == "LA" else rgb, 16)
    if like.alpha is not None:
        a = like.alpha if like.alpha.dtype == np.uint16 else like.alpha.astype(np.uint16) * 257
        samples = np.dstack([samples, a])
    if fmt == "PNG" and samples.shape[2] == 2:
        tmp.write_bytes(_png_with_chunks(_png16_grey_alpha(samples), like.icc_profile, like.exif))
    elif fmt == "PNG":
        import cv2

        bgr = samples[..., [2, 1, 0, 3]] if samples.shape[2] == 4 else samples[..., ::-1]
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if not ok:
            raise ImageError("OpenCV could not encode the 16-bit PNG")
        tmp.write_bytes(_png_with_chunks(buf.tobytes(), like.icc_profile, like.exif))
    elif fmt == "TIFF":
        tmp.write_bytes(_tiff16_bytes(samples, like.icc_profile))
    else:
        raise ImageError(f"16-bit colour cannot be written as {fmt}")


def _png16_grey_alpha(samples: np.ndarray) -> bytes:
    """A 16-bit grey+alpha PNG (colour type 4), which OpenCV cannot write: unfiltered rows, zlib."""
    h, w, _ = samples.shape
    rows = np.ascontiguousarray(samples, dtype=">u2").view(np.uint8).reshape(h, w * 4)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw, 6))
            + _png_chunk(b"IEND", b""))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_with_chunks(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP (before IDAT, as the PNG spec requires) and eXIf right after the IHDR chunk."""
    ihdr_end = 8 + 8 + 13 + 4
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        raw = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        extra += _png_chunk(b"eXIf", raw)
    return png[:ihdr_end] + extra + png[ihdr_end:]


def _tiff16_bytes(samples: np.ndarray, icc: bytes | None, rows_per_strip: int = 64) -> bytes:
    """A baseline little-endian TIFF: 16-bit grey/RGB (+alpha), contiguous, deflate strips, optional ICC."""
    h, w, c = samples.shape
    strips = [
        zlib.compress(np.ascontiguousarray(samples[y : y + rows_per_strip], dtype="<u2").tobytes(), 6)
        for y in range(0, h, rows_per_strip)
    ]
    # (tag, type, values): SHORT=3, LONG=4, UNDEFINED=7; strip offsets are patched in once placed
    tags: list[tuple[int, int, list[int] | bytes]] = [
        (256, 4, [w]),  # ImageWidth
        (257, 4, [h]),  # ImageLength
        (258, 3, [16] * c),  # BitsPerSample
        (259, 3, [8]),  # Compression: deflate
        (262, 3, [2 if c >= 3 else 1]),  # Photometric: RGB or min-is-black grey
        (273, 4, [0] * len(strips)),  # StripOffsets
        (277, 3, [c]),  # SamplesPerPixel
        (278, 4, [rows_per_strip]),  # RowsPerStrip
        (279, 4, [len(s) for s in strips]),  # StripByteCounts
        (284, 3, [1]),  # PlanarConfiguration: contiguous
    ]
    if c in (2, 4):
        tags.append((338, 3, [2]))  # ExtraSamples: unassociated alpha
    if icc:
        tags.append((34675, 7, icc))  # ICC profile
    # layout: header (8) | IFD | out-of-line values | strips
    ifd_size = 2 + 12 * len(tags) + 4
    data_at = 8 + ifd_size
    strip_at = []
    pos = data_at
    out_of_line = b""

    def payload(typ: int, values: list[int] | bytes) -> bytes:
        if typ == 7:
            return bytes(values)
        return struct.pack(f"<{len(values)}{'H' if typ == 3 else 'I'}", *values)

    sizes = {tag: len(payload(typ, vals)) for tag, typ, vals in tags}
    extra = sum(n + (n & 1) for n in sizes.values() if n > 4)
    pos = data_at + extra
    for s in strips:
        strip_at.append(pos)
        pos += len(s)
    tags = [(t, typ, strip_at if t == 273 else vals) for t, typ, vals in tags]
    ifd = struct.pack("<H", len(tags))
    cursor = data_at
    for tag, typ, vals in sorted(tags, key=lambda e: e[0]):
        raw = payload(typ, vals)
        count = len(raw) if typ == 7 else len(vals)
        if len(raw) <= 4:  # values that fit are stored in the entry itself (TIFF 6.0, section 2)
            ifd += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\x00")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, cursor)
            out_of_line += raw + (b"\x00" if len(raw) & 1 else b"")
            cursor += len(raw) + (len(raw) & 1)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + out_of_line + b"".join(strips)


def compare_image(before: np.ndarray, after: np.ndarray, separator: int = 4) -> Image.Image:
    """Side by side, before | after, with a thin mid-grey separator (8-bit RGB, for looking at)."""
    h, w = before.shape[:2]
    canvas = np.full((h, 2 * w + separator, 3), 128, dtype=np.uint8)
    canvas[:, :w] = _to_samples(before, 8)
    canvas[:, w + separator :] = _to_samples(after, 8)
    return Image.fromarray(canvas, "RGB")


def write_compare(
    path: str | os.PathLike, before: np.ndarray, after: np.ndarray, *, overwrite: bool = False
) -> None:
    path = Path(path)
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            compare_image(before, after).save(tmp, format="PNG")
    except FileExistsError:
        raise ImageError(f"{path}: already exists (use overwrite)") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot write: {exc}") from None
