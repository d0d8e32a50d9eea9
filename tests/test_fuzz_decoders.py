"""Decoders fuzzed: mutated PNG/JPEG/TIFF/WebP/BMP/GIF bytes through ``ramir restore`` and the web API.

Every case restores completely or gives one ``ramir: FILE: REASON`` line (the web: a 4xx, never a 5xx);
never a traceback, a partial or temporary output, or a touched input. The oracle knows which inputs are
valid (unchanged seeds, seeds under another format's name, the TIFF whose later page is broken): those
must be restored, so decoders that refused every file would fail. The mutations and the checks live in
``experiments/robustness/fuzz_decoders.py``, whose long run draws thousands of cases; here a fixed seed
(``derandomize``) and a bounded sample, about 25 s on one busy core: up to 100 CLI and 150 web cases per
mutation kind (638 and 938: "valid" and "empty" have 19 each), 12 over HTTP, 40 bombs that must be refused
before any decoder runs, and the 4 inputs that broke the promise before the fixes in ramir.imageio.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import shutil
import struct
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image, ImageFile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `experiments`

from experiments.robustness.fuzz_decoders import (
    FUZZ_MAX_PIXELS,
    KINDS,
    SIGNATURES,
    WEB_UNDECODABLE,
    Case,
    bombs,
    cases,
    check_cli,
    check_web,
    png_chunk,
    seed_images,
    tiny_model,
)

from ramir.errors import ImageError
from ramir.imageio import read_image
from ramir.web.server import UploadError, decode_upload, make_server

CLI_CASES, WEB_CASES, HTTP_CASES = 100, 150, 12  # per kind, per kind, in all


def fuzz_settings(max_examples: int) -> settings:
    """A fixed sample: the same cases on every run and machine, nothing written into the repository."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextlib.contextmanager
def unconfigured_logging() -> Iterator[None]:
    """As under the CLI: no logging handlers, so Python prints warnings and errors logged by a library
    on stderr (pytest's handlers, added for each test's call, would swallow them)."""
    with mock.patch.object(logging.getLogger(), "handlers", []):
        yield


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory):
    """Hypothesis caches what it learns under .hypothesis/ even without a database: not in the repository."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.mark.parametrize("kind", KINDS)
def test_restore_cli_gives_an_image_or_one_line(kind, model, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"cli-{kind}")
    numbers = itertools.count()

    @fuzz_settings(CLI_CASES)
    @given(cases(kinds=(kind,)))
    def one(case: Case) -> None:
        workdir = base / f"case{next(numbers)}"
        with unconfigured_logging():
            outcome = check_cli(case, workdir, model)
        shutil.rmtree(workdir)
        assert not outcome.problems, outcome.report()

    one()


@pytest.mark.parametrize("kind", KINDS)
def test_web_decoder_gives_an_image_or_a_4xx(kind):
    @fuzz_settings(WEB_CASES)
    @given(cases(kinds=(kind,)))
    def one(case: Case) -> None:
        outcome = check_web(case)
        assert not outcome.problems, outcome.report()

    one()


def test_http_api_answers_200_or_4xx_never_5xx(model):
    from ramir.inference import load

    server = make_server(load(model, device="cpu", tile=0), "127.0.0.1", 0, max_pixels=FUZZ_MAX_PIXELS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/restore"

    @fuzz_settings(HTTP_CASES)
    @given(cases())
    def one(case: Case) -> None:
        req = urllib.request.Request(url, data=case.data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        assert status == 200 or 400 <= status < 500, (case, status, body[:200])
        if status == 200:
            with Image.open(io.BytesIO(body)) as im:
                im.load()
                assert im.size == decode_upload(case.data, FUZZ_MAX_PIXELS).size

    try:
        one()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ------------------------------------------------------------------------ what the fuzzing found, pinned
def _tiff_ifd(data: bytes) -> tuple[int, int]:
    """(offset of the first directory, its entry count) of a little-endian TIFF."""
    ifd = struct.unpack("<I", data[4:8])[0]
    return ifd, struct.unpack("<H", data[ifd : ifd + 2])[0]


def _tiff_entry(data: bytes, tag: int) -> int:
    ifd, count = _tiff_ifd(data)
    entries = range(ifd + 2, ifd + 2 + 12 * count, 12)
    return next(e for e in entries if data[e : e + 2] == struct.pack("<H", tag))


def _set_tiff_tag(data: bytes, tag: int, value: int) -> bytes:
    buf, entry = bytearray(data), _tiff_entry(data, tag)
    typ = struct.unpack("<H", buf[entry + 2 : entry + 4])[0]
    struct.pack_into("<H" if typ == 3 else "<I", buf, entry + 8, value)
    return bytes(buf)


def _regressions() -> list[Case]:
    seeds = seed_images()
    tif, tif12, tif16, png = (seeds[name][1] for name in ("tiff-rgb", "tiff-rgb12", "tiff-grey16", "png-rgb"))
    strip = struct.unpack("<I", tif[_tiff_entry(tif, 273) + 8 :][:4])[0]  # where its one LZW strip is
    ifd, count = _tiff_ifd(tif16)
    next_ifd = ifd + 2 + 12 * count  # the pointer to the next directory (0: none)
    chunk = png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(8 << 20)))  # right after IHDR
    return [
        # libtiff (inside Pillow) printed "tempfile.tif: Using code not yet in table." on stderr
        Case("tiff-rgb", "overwrite", "in.tif", tif[:strip] + bytes(200) + tif[strip + 200 :],
             "LZW strip zeroed"),
        # Pillow logged "More samples per pixel than can be decoded: 131" on stderr
        Case("tiff-rgb12", "overwrite", "in.tif", _set_tiff_tag(tif12, 277, 131), "SamplesPerPixel := 131"),
        # Image.open raised ValueError (MAX_TEXT_CHUNK): "ValueError: ..." instead of an ImageError
        Case("png-rgb", "bomb", "in.png", png[:33] + chunk + png[33:], "iCCP inflating to 8 MB"),
        # counting pages raised TypeError "Missing dimensions": a CLI line naming it, a 500 from the web API;
        # the first page is intact, so the image is restored
        Case("tiff-grey16", "overwrite", "in.tif",
             tif16[:next_ifd] + struct.pack("<I", 1) + tif16[next_ifd + 4 :], "next directory at offset 1",
             must_restore=True),
    ]


@pytest.mark.parametrize("case", _regressions(), ids=lambda c: c.recipe)
def test_found_by_fuzzing(case, model, tmp_path):
    with unconfigured_logging():
        cli, web = check_cli(case, tmp_path, model), check_web(case)
    assert not cli.problems and not web.problems, (cli.report(), web.report())
    if case.must_restore:
        assert cli.result == web.result == "restored"
    if cli.result == "refused":
        with pytest.raises(ImageError) as info:
            read_image(tmp_path / "in" / case.name)
        assert "\n" not in str(info.value)


def test_every_valid_seed_is_restored_under_any_name(model, tmp_path):
    """The oracle's valid inputs, all of them: each seed unchanged and under each other format's name."""
    names = [f"in{suffix}" for _, suffix in SIGNATURES.values()]
    restored = 0
    for seed, (_, data) in sorted(seed_images().items()):
        for i, name in enumerate(names):
            case = Case(seed, "valid", name, data, f"unchanged, named {name}", must_restore=True)
            with unconfigured_logging():
                cli, web = check_cli(case, tmp_path / f"{seed}-{i}", model), check_web(case)
            assert not cli.problems and not web.problems, (cli.report(), web.report())
            assert cli.result == "restored" and (web.result == "restored") == (seed not in WEB_UNDECODABLE)
            restored += 1
    assert restored == len(seed_images()) * len(SIGNATURES)


def test_bombs_are_refused_before_anything_is_decoded(tmp_path, monkeypatch):
    """OpenCV read a TIFF Pillow cannot (12-bit RGB) at its declared size, then checked the limit."""
    import cv2

    def decoded(*args, **kwargs):
        raise AssertionError("a bomb above the pixel limit reached a decoder")

    monkeypatch.setattr(cv2, "imdecode", decoded)
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    numbers = itertools.count()

    @fuzz_settings(40)
    @given(bombs().filter(lambda case: case.must_refuse))
    def one(case: Case) -> None:
        path = tmp_path / f"{next(numbers)}-{case.name}"
        path.write_bytes(case.data)
        with pytest.raises(ImageError, match="above the limit"):
            read_image(path, max_pixels=FUZZ_MAX_PIXELS)
        with pytest.raises(UploadError) as info:
            decode_upload(case.data, FUZZ_MAX_PIXELS)
        assert 400 <= info.value.status < 500

    one()
