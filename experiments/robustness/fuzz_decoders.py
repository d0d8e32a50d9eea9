"""Fuzz the decoders: mutated PNG/JPEG/TIFF/WebP/BMP/GIF bytes through ``ramir restore`` and the web API.

The promise under test (the robustness issue): whatever bytes a user hands over, ``ramir restore`` either
restores the file (exit 0, a complete output) or prints exactly one ``ramir: FILE: REASON`` line (exit 1):
no traceback, no partial or temporary output, the input untouched; the web API answers 200 or a 4xx,
never a 5xx. A refusal is only allowed for a broken file: a valid one (unchanged, or under another
format's name) must be restored, so a decoder that refused everything would fail. Mutations (hypothesis
strategies, shared with ``tests/test_fuzz_decoders.py``): truncation, 1-8 bit flips, byte-range
overwrites, wrong or swapped magic headers, patched declared sizes (PNG IHDR with its CRC recomputed, JPEG
SOF, BMP, TIFF ImageWidth/ImageLength, WebP, GIF), zero-size files and
decompression bombs. Seeds are 24x20 images made here (RGB, grey, RGBA, palette, 16-bit, CMYK).

The long run (about 0.02-0.05 s a case on one core: 5000 cases in 2-4 minutes; the test runs a fixed,
bounded sample)::

    OMP_NUM_THREADS=1 python -m experiments.robustness.fuzz_decoders --cases 5000 --seed 0

It prints cases and outcomes per format and per mutation kind, then the counts that must be 0
(tracebacks or escaped exceptions, valid images refused, web 500s, partial outputs, changed inputs, other
broken promises such as extra stderr lines), with the recipe of each offender; the exit status is 1 when
any is not 0.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import hashlib
import io
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

W, H = 24, 20
FUZZ_MAX_PIXELS = 1_000_000  # the limit both front ends get in the fuzz runs: bombs must stop at it
KINDS = ("valid", "truncate", "bitflip", "overwrite", "magic", "dims", "empty", "bomb")
SIGNATURES = {  # format -> (magic bytes, a file suffix)
    "PNG": (b"\x89PNG\r\n\x1a\n", ".png"),
    "JPEG": (b"\xff\xd8\xff\xe0", ".jpg"),
    "TIFF": (b"II*\x00", ".tif"),
    "WEBP": (b"RIFF\x00\x00\x00\x00WEBP", ".webp"),
    "BMP": (b"BM", ".bmp"),
    "GIF": (b"GIF89a", ".gif"),
}


# ------------------------------------------------------------------------------------------------ seeds
def _pil_bytes(im: Image.Image, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


@functools.cache
def seed_images() -> dict[str, tuple[str, bytes]]:
    """name -> (format, bytes): small valid files in every mode the readers treat differently."""
    import cv2

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA")
    grey = rgb.convert("L")
    grey16 = Image.fromarray(rng.integers(0, 65536, (H, W), dtype=np.uint16))
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)  # through OpenCV: Pillow reads 8 bits
    return {
        "png-rgb": ("PNG", _pil_bytes(rgb, "PNG")),
        "png-grey": ("PNG", _pil_bytes(grey, "PNG")),
        "png-rgba": ("PNG", _pil_bytes(rgba, "PNG")),
        "png-palette": ("PNG", _pil_bytes(rgb.quantize(16), "PNG")),
        "png-grey16": ("PNG", _pil_bytes(grey16, "PNG")),
        "png-rgb16": ("PNG", cv2.imencode(".png", rgb16)[1].tobytes()),
        "jpeg-rgb": ("JPEG", _pil_bytes(rgb, "JPEG", quality=90)),
        "jpeg-grey": ("JPEG", _pil_bytes(grey, "JPEG", quality=90)),
        "jpeg-cmyk": ("JPEG", _pil_bytes(rgb.convert("CMYK"), "JPEG", quality=90)),
        "tiff-rgb": ("TIFF", _pil_bytes(rgb, "TIFF", compression="tiff_lzw")),
        "tiff-rgba": ("TIFF", _pil_bytes(rgba, "TIFF")),
        "tiff-grey16": ("TIFF", _pil_bytes(grey16, "TIFF")),
        "tiff-rgb16": ("TIFF", cv2.imencode(".tiff", rgb16)[1].tobytes()),
        "tiff-rgb12": ("TIFF", _tiff(W, H, rng.integers(0, 256, H * W * 9 // 2, dtype=np.uint8).tobytes(),
                                     bits=12, samples=3)),  # Pillow cannot read it: OpenCV's path
        "webp-lossy": ("WEBP", _pil_bytes(rgb, "WEBP", quality=80)),
        "webp-lossless": ("WEBP", _pil_bytes(rgba, "WEBP", lossless=True)),
        "bmp-rgb": ("BMP", _pil_bytes(rgb, "BMP")),
        "bmp-grey": ("BMP", _pil_bytes(grey, "BMP")),
        "gif": ("GIF", _pil_bytes(rgb.quantize(32), "GIF")),
    }


# ------------------------------------------------------------------------------------------ mutations
@dataclass(frozen=True)
class Case:
    """One fuzz input: the file name (its suffix may lie) and bytes, plus a recipe to rebuild them."""

    seed: str  # a key of seed_images(), or "bomb"
    kind: str  # one of KINDS
    name: str
    data: bytes = field(repr=False)
    recipe: str = ""
    must_refuse: bool = False  # a bomb above FUZZ_MAX_PIXELS: restoring it would be a bug
    must_restore: bool = False  # a valid image (whatever its name): refusing it would be a bug

    @property
    def format(self) -> str:
        return seed_images()[self.seed][0] if self.seed in seed_images() else "PNG"


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png(width: int, height: int, idat: bytes, *, depth: int = 8, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)  # grey
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


@functools.cache
def _zeros_deflated(n: int) -> bytes:
    return zlib.compress(bytes(n), 9)


def _tiff(width: int, height: int, strip: bytes, *, bits: int = 8, samples: int = 1, deflate: bool = False
          ) -> bytes:
    """A one-strip little-endian TIFF, contiguous samples: grey (1 sample) or RGB (3)."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 8 if deflate else 1),
            (262, 3, 2 if samples == 3 else 1), (273, 4, 0), (277, 3, samples), (278, 4, height),
            (279, 4, len(strip))]
    bits_at = 8 + 2 + 12 * len(tags) + 4  # BitsPerSample (one per sample) just after the directory
    data_at = bits_at + 2 * samples
    entries = b""
    for tag, typ, value in tags:
        if tag == 258 and samples > 2:
            entries += struct.pack("<HHII", tag, typ, samples, bits_at)
        else:
            value = data_at if tag == 273 else value
            entries += struct.pack("<HHI" + ("Hxx" if typ == 3 else "I"), tag, typ, 1, value)
    return (b"II*\x00" + struct.pack("<IH", 8, len(tags)) + entries + bytes(4)
            + struct.pack(f"<{samples}H", *[bits] * samples) + strip)


def patch_dims(fmt: str, data: bytes, width: int, height: int) -> bytes:
    """Write a declared width/height into the header of ``data`` (wrapped to the field's size)."""
    buf = bytearray(data)
    if fmt == "PNG":
        ihdr = struct.pack(">II", width % 2**32, height % 2**32) + bytes(buf[24:29])
        buf[16:33] = ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))  # a valid CRC: the size is read
    elif fmt == "JPEG":
        pos = 2
        while pos + 9 <= len(buf) and buf[pos] == 0xFF:
            marker = buf[pos + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
                struct.pack_into(">HH", buf, pos + 5, height % 2**16, width % 2**16)
                break
            pos += 2 + struct.unpack(">H", buf[pos + 2 : pos + 4])[0]
    elif fmt == "BMP":
        wrap = lambda v: (v + 2**31) % 2**32 - 2**31  # noqa: E731 - signed: a negative height is top-down
        struct.pack_into("<ii", buf, 18, wrap(width), wrap(height))
    elif fmt == "TIFF":
        order = "<" if buf[:2] == b"II" else ">"
        ifd = struct.unpack(order + "I", buf[4:8])[0]
        count = struct.unpack(order + "H", buf[ifd : ifd + 2])[0]
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag, typ = struct.unpack(order + "HH", buf[entry : entry + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                if typ == 3:
                    struct.pack_into(order + "H", buf, entry + 8, value % 2**16)
                else:
                    struct.pack_into(order + "I", buf, entry + 8, value % 2**32)
    elif fmt == "WEBP":
        chunk = bytes(buf[12:16])
        w1, h1 = (width - 1) % 2**14, (height - 1) % 2**14
        if chunk == b"VP8 ":  # key frame: 3-byte tag, 9d 01 2a, then 14-bit width and height
            struct.pack_into("<HH", buf, 26, width % 2**14, height % 2**14)
        elif chunk == b"VP8L":  # 0x2f, then width-1 and height-1 in 14 bits each
            bits = struct.unpack("<I", buf[21:25])[0]
            struct.pack_into("<I", buf, 21, (bits & ~0x0FFFFFFF) | w1 | (h1 << 14))
        elif chunk == b"VP8X":  # canvas width-1 and height-1, 24 bits each
            buf[24:30] = b"".join(((v - 1) % 2**24).to_bytes(3, "little") for v in (width, height))
    elif fmt == "GIF":
        struct.pack_into("<HH", buf, 6, width % 2**16, height % 2**16)
        table = 3 * 2 ** ((buf[10] & 7) + 1) if buf[10] & 0x80 else 0
        pos = 13 + table
        while pos < len(buf) and buf[pos] == 0x21:  # skip extension blocks up to the image descriptor
            pos += 2
            while pos < len(buf) and buf[pos]:
                pos += buf[pos] + 1
            pos += 1
        if pos + 9 <= len(buf) and buf[pos] == 0x2C:
            struct.pack_into("<HH", buf, pos + 5, width % 2**16, height % 2**16)
    return bytes(buf)


# declared sizes: the edges of every field and a few bomb-sized values, else anything
_DIM_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 7, 255, 256, 4096, 16383, 16384, 40000, 65535, 65536, 2**24 - 1, 2**31 - 1,
                     2**32 - 1, -1, -20]),
    st.integers(0, 2**32 - 1),
)


def _name(fmt: str) -> str:
    return "in" + SIGNATURES[fmt][1]


@st.composite
def bombs(draw: st.DrawFn) -> Case:
    """Decompression bombs: each is small on disk, huge once decoded (or claims to be)."""
    which = draw(st.sampled_from(["declared", "sparse", "idat", "iccp", "ztxt", "tiff"]))
    if which == "declared":  # a few KB of deflated zeros under a header of up to 2**31-1 squared
        w = draw(st.sampled_from([40000, 65535, 100_000, 2**31 - 1]))
        h = draw(st.sampled_from([40000, 65535, 2**31 - 1]))
        data = _png(w, h, _zeros_deflated(4 << 20), depth=draw(st.sampled_from([1, 8, 16])))
        return Case("bomb", "bomb", "bomb.png", data, f"PNG declaring {w}x{h}, 4 MB of deflated zeros", True)
    if which == "sparse":  # a complete, valid 1-bit image just above the limit: refused, not decoded
        w, h = draw(st.integers(1001, 3000)), draw(st.integers(1001, 3000))
        raw_row = bytes(1 + (w + 7) // 8)
        data = _png(w, h, zlib.compress(raw_row * h, 9), depth=1)
        return Case("bomb", "bomb", "sparse.png", data, f"valid all-black 1-bit PNG {w}x{h}", True)
    if which == "idat":  # a 24x20 header over 64 MB of deflated zeros: must not be inflated entirely
        data = _png(W, H, _zeros_deflated(64 << 20))
        return Case("bomb", "bomb", "idat.png", data, f"PNG {W}x{H} with 64 MB of deflated zeros in IDAT")
    if which in ("iccp", "ztxt"):  # a metadata chunk inflating to 64 MB in front of a valid image
        payload = _zeros_deflated(64 << 20)
        if which == "iccp":
            extra = png_chunk(b"iCCP", b"icc\x00\x00" + payload)
        else:
            extra = png_chunk(b"zTXt", b"Comment\x00\x00" + payload)
        idat = zlib.compress(bytes((W + 1) * H))
        data = _png(W, H, idat, extra=extra)
        return Case("bomb", "bomb", f"{which}.png", data, f"PNG {W}x{H} with a {which} chunk of 64 MB zeros")
    # TIFFs of deflated zeros: 8-bit grey (Pillow's path) or 12-bit RGB (OpenCV's path, which allocates
    # the whole declared image before it reads a byte)
    w = h = draw(st.sampled_from([1100, 4000, 40000]))
    bits, samples = draw(st.sampled_from([(8, 1), (12, 3)]))
    raw = w * h * bits * samples // 8
    strip = _zeros_deflated(raw) if raw <= 100 << 20 else _zeros_deflated(8 << 20)  # 40000: cut short
    data = _tiff(w, h, strip, bits=bits, samples=samples, deflate=True)
    recipe = f"{bits}-bit TIFF declaring {w}x{h}, a deflated strip of zeros"
    return Case("bomb", "bomb", "bomb.tif", data, recipe, must_refuse=True)


@st.composite
def cases(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> Case:
    """A mutated seed image (or a bomb): the strategy both the test and the long run draw from."""
    kind = draw(st.sampled_from(kinds))
    if kind == "bomb":
        return draw(bombs())
    seed = draw(st.sampled_from(sorted(seed_images())))
    fmt, data = seed_images()[seed]
    name, n = _name(fmt), len(data)
    if kind == "valid":
        return Case(seed, kind, name, data, "unchanged", must_restore=True)
    if kind == "empty":
        return Case(seed, kind, name, b"", "zero bytes")
    if kind == "truncate":
        cut = draw(st.integers(1, n - 1))
        return Case(seed, kind, name, data[:cut], f"first {cut} of {n} bytes")
    if kind == "bitflip":
        flips = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=8))
        buf = bytearray(data)
        for pos, bit in flips:
            buf[pos] ^= 1 << bit
        return Case(seed, kind, name, bytes(buf), f"flip (offset, bit) {flips}")
    if kind == "overwrite":
        start = draw(st.integers(0, n - 1))
        chunk = draw(st.one_of(
            st.binary(min_size=1, max_size=64),
            st.builds(lambda b, k: bytes([b]) * k, st.sampled_from([0x00, 0xFF]), st.integers(1, 512)),
        ))
        chunk = chunk[: n - start]
        shown = chunk[:16].hex() + ("..." if len(chunk) > 16 else "")
        return Case(seed, kind, name, data[:start] + chunk + data[start + len(chunk) :],
                    f"bytes {start}..{start + len(chunk)} := {shown}")
    if kind == "magic":
        other = draw(st.sampled_from(sorted(f for f in SIGNATURES if f != fmt)))
        how = draw(st.sampled_from(["rename", "swap", "prefix"]))
        if how == "rename":  # e.g. PNG bytes named .jpg: the content decides, not the name
            return Case(seed, kind, _name(other), data, f"{fmt} bytes named {_name(other)}",
                        must_restore=True)
        if how == "swap":  # another format's signature over the first bytes
            sig = SIGNATURES[other][0]
            return Case(seed, kind, name, sig + data[len(sig) :], f"first {len(sig)} bytes := {other} magic")
        junk = draw(st.binary(min_size=1, max_size=16))
        return Case(seed, kind, name, junk + data, f"prefixed by {junk.hex()}")
    if kind == "dims":
        w, h = draw(_DIM_VALUES), draw(_DIM_VALUES)
        return Case(seed, kind, name, patch_dims(fmt, data, w, h), f"declared size := {w}x{h}")
    raise ValueError(f"unknown mutation kind {kind!r}")


# ------------------------------------------------------------------------------------------- checks
@dataclass
class Outcome:
    """What one front end made of one case: ``restored`` or ``refused``, and every broken promise."""

    case: Case
    front: str  # "cli" or "web"
    result: str = "refused"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        what = f"{self.front} {self.case.seed}/{self.case.kind} [{self.case.recipe}]"
        return f"{what}: {'; '.join(self.problems)}"


def run_captured(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, str, str]:
    """Call ``fn`` with stdout/stderr captured at the Python *and* the file-descriptor level (C libraries
    such as libpng or OpenCV write to fd 2, which the user sees as much as a Python message)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    py_out, py_err = io.StringIO(), io.StringIO()
    result, error = None, None
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        try:
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
                result = fn()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit included: nothing may escape `main`
            error = exc
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            fd_out.seek(0)
            fd_err.seek(0)
            out = py_out.getvalue() + fd_out.read().decode("utf-8", "replace")
            err = py_err.getvalue() + fd_err.read().decode("utf-8", "replace")
    return result, error, out, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_cli(case: Case, workdir: Path, model: str) -> Outcome:
    """Run ``ramir restore`` on the case in-process and check every promise of the robustness issue."""
    from ramir.cli import main
    from ramir.imageio import read_image

    outcome = Outcome(case, "cli")
    src, dst = workdir / "in", workdir / "out"
    src.mkdir(parents=True)
    inp = src / case.name
    inp.write_bytes(case.data)
    before = _digest(inp)
    argv = ["restore", str(inp), "-o", str(dst), "--model", model, "--backend", "torch", "--device", "cpu",
            "--tile", "0", "--max-pixels", str(FUZZ_MAX_PIXELS)]
    started = time.perf_counter()
    code, error, out, err = run_captured(lambda: main(argv))
    outcome.seconds = time.perf_counter() - started
    problems = outcome.problems
    if error is not None:
        problems.append(f"exception escaped main: {type(error).__name__}: {error}")
    elif code not in (0, 1):
        problems.append(f"exit code {code}")
    if "Traceback" in out + err:
        problems.append("traceback")
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        outcome.result = "restored"
        if any(not line.startswith("ramir: ") for line in lines):
            problems.append(f"stray stderr: {err!r}")
    elif len(lines) != 1 or not lines[0].startswith(f"ramir: {inp}: "):
        problems.append(f"failure is not one 'ramir: FILE: REASON' line: {err!r}")
    elif re.match(r"[A-Za-z_.]*(Error|Exception)\b", lines[0][len(f"ramir: {inp}: ") :]):
        problems.append(f"not an ImageError (the CLI names the exception): {lines[0]!r}")
    if case.must_refuse and code == 0:
        problems.append("a bomb above the pixel limit was restored")
    if case.must_restore and code != 0:
        problems.append(f"a valid image was refused: {err.strip()!r}")
    files = sorted(p.relative_to(dst) for p in dst.rglob("*") if not p.is_dir()) if dst.exists() else []
    if files != ([Path(case.name)] if code == 0 else []):
        problems.append(f"partial output: {[str(f) for f in files]}")
    elif code == 0:
        try:
            with warnings.catch_warnings():  # already reported by the CLI, as one line each
                warnings.simplefilter("ignore")
                got = read_image(dst / case.name, max_pixels=None).size
                want = read_image(inp, max_pixels=FUZZ_MAX_PIXELS).size
            if got != want:
                problems.append(f"output is {got}, input {want}")
        except Exception as exc:
            problems.append(f"output does not decode: {type(exc).__name__}: {exc}")
    if sorted(p.name for p in src.iterdir()) != [case.name] or _digest(inp) != before:
        problems.append("input changed")
    return outcome


# The web API decodes with Pillow alone, which cannot read 12-bit RGB TIFF (the CLI reads it through
# OpenCV): a valid file the web answers with a 4xx naming the formats it takes.
WEB_UNDECODABLE = frozenset({"tiff-rgb12"})


class IdentityRestorer:
    """Stands in for the network behind the web API: the decode/encode path is what is fuzzed."""

    def restore(self, image: np.ndarray) -> np.ndarray:
        return image


def check_web(case: Case) -> Outcome:
    """``decode_upload`` returns an image or raises the 4xx ``UploadError``; the full request path
    (decode, restore, encode) then answers a PNG of the same size or a 4xx, never what becomes a 500."""
    outcome = Outcome(case, "web")
    started = time.perf_counter()
    with warnings.catch_warnings():  # Pillow's "Corrupt EXIF data" and such: the server's log, not a bug
        warnings.simplefilter("ignore")
        _check_web(case, outcome)
    outcome.seconds = time.perf_counter() - started
    if case.must_restore and case.seed not in WEB_UNDECODABLE and outcome.result != "restored":
        outcome.problems.append("a valid image was refused")
    return outcome


def _check_web(case: Case, outcome: Outcome) -> None:
    from ramir.errors import RamirError
    from ramir.web.server import RestoreService, UploadError, decode_upload

    try:
        loaded = decode_upload(case.data, FUZZ_MAX_PIXELS)
    except UploadError as exc:
        if not 400 <= exc.status < 500:
            outcome.problems.append(f"decode_upload: status {exc.status}")
        return
    except Exception as exc:
        outcome.problems.append(f"decode_upload raised {type(exc).__name__}: {exc}")
        return
    outcome.result = "restored"
    if case.must_refuse:
        outcome.problems.append("a bomb above the pixel limit was decoded")
    service = RestoreService(IdentityRestorer(), max_pixels=FUZZ_MAX_PIXELS)
    try:
        png = service.restore_png(case.data)
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            if im.size != loaded.size:
                outcome.problems.append(f"answer is {im.size}, upload {loaded.size}")
    except (UploadError, RamirError) as exc:  # the server answers these with their 4xx
        if isinstance(exc, UploadError) and not 400 <= exc.status < 500:
            outcome.problems.append(f"restore_png: status {exc.status}")
        outcome.result = "refused"
    except Exception as exc:
        outcome.problems.append(f"restore_png raised {type(exc).__name__} (a 500): {exc}")


def tiny_model(path: Path) -> str:
    """A tiny NAFNet checkpoint (width 8): restoring 24x20 images in milliseconds."""
    import torch

    import ramir
    from ramir.checkpoints import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(path, ramir.create_model("nafnet-s", width=8))
    return str(path)


# --------------------------------------------------------------------------------------------- long run
def _table(title: str, rows: dict[str, collections.Counter]) -> str:
    cols = ["cases", "cli restored", "cli one-line failure", "web decoded", "web 4xx", "problems"]
    lines = [f"{title:<16}" + "".join(f"{c:>22}" for c in cols)]
    for key in sorted(rows):
        lines.append(f"{key:<16}" + "".join(f"{rows[key][c]:>22}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.configuration import set_hypothesis_home_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="number of generated cases (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    by_format: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: collections.Counter = collections.Counter()
    offenders: list[str] = []
    slowest: list[tuple[float, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ramir-fuzz-") as tmp:
        base = Path(tmp)
        set_hypothesis_home_dir(base / "hypothesis")  # its cache, not in the working directory
        model = tiny_model(base / "tiny.safetensors")
        n = 0

        @hypothesis_seed(args.seed)
        @settings(max_examples=args.cases, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(cases())
        def one(case: Case) -> None:
            nonlocal n
            n += 1
            workdir = base / f"case{n}"
            cli = check_cli(case, workdir, model)
            web = run_captured(lambda: check_web(case))[0]  # C libraries' noise in a server log is no bug
            shutil.rmtree(workdir, ignore_errors=True)
            slowest.append((cli.seconds + web.seconds, f"{case.seed}/{case.kind} [{case.recipe}]"))
            slowest.sort(reverse=True)
            del slowest[3:]
            for row in (by_format[case.format if case.seed != "bomb" else "bomb"], by_kind[case.kind]):
                row["cases"] += 1
                row["cli restored" if cli.result == "restored" else "cli one-line failure"] += 1
                row["web decoded" if web.result == "restored" else "web 4xx"] += 1
                row["problems"] += len(cli.problems) + len(web.problems)
            for o in (cli, web):
                for p in o.problems:
                    key = ("traceback" if "traceback" in p or "escaped" in p
                           else "valid image refused" if "valid image" in p
                           else "web 500" if "raised" in p or "status" in p
                           else "partial output" if "partial" in p
                           else "changed input" if "input changed" in p else "other")
                    counts[key] += 1
                if o.problems:
                    offenders.append(o.report())
            if n % 100 == 0:
                print(f"... {n} cases, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

        one()
    elapsed = time.perf_counter() - started
    print(f"fuzz_decoders: {n} cases (seed {args.seed}) in {elapsed:.0f} s, "
          f"{elapsed / max(n, 1):.2f} s a case; CLI max-pixels {FUZZ_MAX_PIXELS:,}")
    print(_table("format", by_format))
    print(_table("mutation", by_kind))
    print("slowest cases: " + "; ".join(f"{s:.2f} s {what}" for s, what in slowest))
    for key in ("traceback", "valid image refused", "web 500", "partial output", "changed input", "other"):
        print(f"{key}: {counts[key]}")
    for line in offenders[:50]:
        print("  " + line)
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
