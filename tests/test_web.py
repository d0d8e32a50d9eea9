"""The web app: multipart parsing, the HTTP API (200/400/413/503, the inference lock, client disconnects)
and a real browser run."""

from __future__ import annotations

import contextlib
import io
import json
import queue
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ramir
from ramir.web.server import RestoreService, make_server, parse_multipart

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIMIT = 300_000  # bytes; small so the 413 test stays cheap


class OverlapCounter:
    """Counts how many ``restore`` calls run at once (``max_active``), to check the server's lock."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self._count = threading.Lock()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._count:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            yield
        finally:
            with self._count:
                self.active -= 1


class TinyRestorer(OverlapCounter):
    """The CLI's :class:`ramir.inference.Restorer` around a tiny, untrained RAM-SwinIR."""

    def __init__(self) -> None:
        from ramir.inference import load

        super().__init__()
        torch.manual_seed(0)
        net = ramir.create_model("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2])
        self.restorer = load(net, device="cpu", tile=0)
        self.name = "tiny"

    def restore(self, image: np.ndarray) -> np.ndarray:
        with self.running():
            time.sleep(0.05)  # widen the window in which overlapping calls would be seen
            return self.restorer.restore(image)


def _png(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def restorer() -> TinyRestorer:
    return TinyRestorer()


@contextlib.contextmanager
def serving(restorer, **kwargs) -> Iterator[str]:
    """``ramir serve``'s server for ``restorer`` in a thread on a free port: yields its base URL."""
    server = make_server(restorer, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def base_url(restorer):
    with serving(restorer, model_name="tiny-test", max_upload_bytes=LIMIT) as url:
        yield url


def _post(url: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def _multipart(
    fields: list[tuple[str, str | None, bytes]], boundary: str = "xYzBoundary42"
) -> tuple[bytes, str]:
    out = b""
    for name, filename, content in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        ctype = "Content-Type: image/png\r\n" if filename else ""
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n{ctype}\r\n".encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


# ------------------------------------------------------------------------------------ unit level
def test_parse_multipart_keeps_binary_content_exact():
    tricky = b"\r\n--not-the-boundary\r\n\r\n\x00\xff" + bytes(range(256))
    body, ctype = _multipart([("note", None, b"hello"), ("image", "a b.png", tricky)])
    fields = parse_multipart(b"preamble\r\n" + body, ctype)
    assert fields["note"] == (None, b"hello")
    assert fields["image"] == ("a b.png", tricky)
    with pytest.raises(Exception, match="boundary"):
        parse_multipart(body, "multipart/form-data")


# ------------------------------------------------------------------------------------ HTTP level
def test_page_and_static_files(base_url):
    with urllib.request.urlopen(base_url + "/", timeout=10) as resp:
        html = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
    assert 'id="file"' in html and "/static/app.js" in html
    with urllib.request.urlopen(base_url + "/api/info", timeout=10) as resp:
        info = json.loads(resp.read())
    assert info["model"] == "tiny-test" and info["max_upload_bytes"] == LIMIT
    for bad in ("/static/..%2Fserver.py", "/static/missing.js", "/nothing"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base_url + bad, timeout=10)
        assert err.value.code == 404


def test_restore_raw_and_multipart(base_url, restorer):
    png = _png(37, 53, seed=1)
    status, ctype, raw_out = _post(base_url + "/api/restore", png, "image/png")
    assert status == 200 and ctype == "image/png"
    body, mp_type = _multipart([("image", "x.png", png)])
    status, ctype, mp_out = _post(base_url + "/api/restore", body, mp_type)
    assert status == 200 and ctype == "image/png"
    got = np.asarray(Image.open(io.BytesIO(raw_out)))
    assert got.shape == (37, 53, 3)
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(mp_out))))
    # the server returns exactly the restorer's output, rounded to 8 bits
    src = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255
    expected = np.clip(np.rint(restorer.restore(src) * np.float32(255)), 0, 255)
    assert np.array_equal(got, expected.astype(np.uint8))


def test_alpha_and_grey_are_kept(base_url):
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    for arr, mode in ((rgba, "RGBA"), (rgba[..., 0], "L")):
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, format="PNG")
        status, _, out = _post(base_url + "/api/restore", buf.getvalue(), "image/png")
        assert status == 200
        result = Image.open(io.BytesIO(out))
        assert result.mode == mode and result.size == (24, 20)
        if mode == "RGBA":
            assert np.array_equal(np.asarray(result)[..., 3], rgba[..., 3])  # alpha untouched


def test_too_large_upload_is_413(base_url):
    status, ctype, body = _post(base_url + "/api/restore", b"\x89PNG" + b"0" * (LIMIT + 10), "image/png")
    assert status == 413 and ctype == "application/json"
    assert "limit" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"this is not an image at all", "image/png", "not a readable image"),
        (b"", "image/png", "empty"),
        (_png(8, 8)[:40], "image/png", "PNG, JPEG"),  # truncated file
        (
            _multipart([("note", None, b"no file here")])[0],
            "multipart/form-data; boundary=xYzBoundary42",
            "no file",
        ),
    ],
)
def test_bad_uploads_are_400(base_url, body, ctype, needle):
    status, got_type, resp = _post(base_url + "/api/restore", body, ctype)
    assert status == 400 and got_type == "application/json"
    assert needle in json.loads(resp)["error"]


def test_inference_is_serialised(base_url, restorer):
    png = _png(24, 24, seed=2)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(_post(base_url + "/api/restore", png, "image/png")[0]))
        for _ in range(4)
    ]
    restorer.max_active = 0
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 4
    assert restorer.max_active == 1


def test_service_rejects_too_many_pixels(restorer):
    service = RestoreService(restorer, max_pixels=100)
    with pytest.raises(Exception, match="limit is 100 pixels"):
        service.restore_png(_png(11, 10))


def test_image_smaller_than_the_window_comes_back_restored(base_url):
    status, ctype, resp = _post(base_url + "/api/restore", _png(5, 6), "image/png")
    assert status == 200 and ctype == "image/png"
    assert Image.open(io.BytesIO(resp)).size == (6, 5)  # padded inside the network, cropped back


def test_serve_refuses_without_a_model(monkeypatch, capsys, tmp_path):
    import ramir.inference
    from ramir.cli import main

    monkeypatch.setattr(ramir.inference, "default_weights", lambda: None)  # a build without embedded weights
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ramir: error: no model to serve") and "--model" in err and "\n" not in err
    assert main(["serve", "--model", str(tmp_path / "nope.safetensors"), "--port", "0"]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


# ------------------------------------------------------------------ bounded queue, disconnects
class GatedRestorer(OverlapCounter):
    """Identity restorer that blocks in ``restore`` until the test opens the gate: the queue fills
    deterministically, without timing assumptions."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)  # one release per restore call that started

    def restore(self, image: np.ndarray) -> np.ndarray:
        with self.running():
            self.entered.release()
            assert self.gate.wait(20), "the test never opened the gate"
            return image.copy()


@pytest.fixture
def gated():
    """A fresh server (max_queue=2) around a :class:`GatedRestorer`; ``done`` receives the client address
    of every connection whose handler has finished, so a test can wait for the server side of a
    disconnect to be over before reading stderr."""
    restorer = GatedRestorer()
    server = make_server(restorer, "127.0.0.1", 0, model_name="gated", max_queue=2)
    done: queue.Queue = queue.Queue()
    original = server.process_request_thread

    def tracked(request, client_address):
        try:
            original(request, client_address)
        finally:
            done.put(client_address)

    server.process_request_thread = tracked  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, restorer, done
    finally:
        restorer.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/api/restore"


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.005)


def _wait_done(done: queue.Queue, address: tuple, timeout: float = 10.0) -> None:
    """Block until the handler of the connection from ``address`` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        got = done.get(timeout=max(0.01, deadline - time.monotonic()))
        if tuple(got[:2]) == tuple(address[:2]):
            return


def _raw_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /api/restore HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _close(sock: socket.socket, reset: bool) -> None:
    if reset:  # SO_LINGER 0: close() sends RST, the harshest disconnect (the server sees ECONNRESET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_requests_beyond_the_queue_get_503(gated):
    server, restorer, _ = gated
    png = _png(16, 16, seed=4)
    results: list[int] = []

    def client() -> threading.Thread:
        t = threading.Thread(target=lambda: results.append(_post(_url(server), png, "image/png")[0]))
        t.start()
        return t

    workers = [client()]
    assert restorer.entered.acquire(timeout=10)  # the first one is restoring, blocked on the gate
    workers += [client(), client()]  # max_queue=2: these two wait behind it
    _wait_for(lambda: server.service.in_flight == 3)
    try:
        for _ in range(2):  # full: refused at once, not queued
            req = urllib.request.Request(_url(server), data=png, method="POST",
                                         headers={"Content-Type": "image/png"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert err.value.code == 503
            assert err.value.headers["Content-Type"] == "application/json"
            assert int(err.value.headers["Retry-After"]) >= 1
            message = json.loads(err.value.read())["error"]
            assert message == "busy: 3 requests are waiting; try again shortly"
    finally:
        restorer.gate.set()
        for t in workers:
            t.join(20)
    assert results == [200, 200, 200]
    assert restorer.max_active == 1  # still one restore at a time
    assert server.service.in_flight == 0
    assert _post(_url(server), png, "image/png")[0] == 200  # the queue drained: served again


def test_admission_is_bounded(restorer):
    service = RestoreService(restorer, max_queue=1)
    assert service.admit() and service.admit()  # the running one and one waiting
    assert service.full() and not service.admit()
    err = service.busy_error()
    assert err.status == 503 and err.message == "busy: 2 requests are waiting; try again shortly"
    assert int(err.headers["Retry-After"]) >= 1
    service.release()
    assert service.admit()
    with pytest.raises(ValueError, match="max_queue"):
        RestoreService(restorer, max_queue=-1)


def test_serve_max_queue_option(capsys):
    from ramir.cli import build_parser, main

    assert build_parser().parse_args(["serve"]).max_queue == 4
    assert build_parser().parse_args(["serve", "--max-queue", "0"]).max_queue == 0
    assert main(["serve", "--max-queue", "-1", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == "ramir: error: --max-queue must be 0 or more, got -1"


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
def test_client_disconnects_leave_no_traceback(gated, capsys, reset, verbose):
    server, restorer, done = gated
    server.verbose = verbose
    restorer.gate.set()
    port = server.server_address[1]
    png = _png(64, 64, seed=6)
    capsys.readouterr()
    said: list[str] = []  # stderr after each disconnect

    # 1. half an upload, then gone
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = _raw_request(port, png)
        sock.sendall(request[: len(request) - len(png) // 2])
        first = sock.getsockname()
        time.sleep(0.05)  # let the server start reading the body
        _close(sock, reset)
    _wait_done(done, first)
    said.append(capsys.readouterr().err)

    # 2. a whole upload, gone before the response is read (the restore is still running when it leaves)
    restorer.gate.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_raw_request(port, png))
        second = sock.getsockname()
        assert restorer.entered.acquire(timeout=10)
        _close(sock, reset)
    restorer.gate.set()
    _wait_done(done, second)
    said.append(capsys.readouterr().err)

    status, ctype, _ = _post(_url(server), png, "image/png")  # still serving
    assert status == 200 and ctype == "image/png"
    assert server.service.in_flight == 0
    said.append(capsys.readouterr().err)
    assert not any("Traceback" in err for err in said)
    if not verbose:
        assert said == ["", "", ""]
        return
    # verbose: exactly one line for each disconnect, naming that client (the server notices both: reading
    # the rest of the body in 1., writing the answer into the closed socket in 2.), else the request log
    for err, (host, port_) in zip(said, (first, second)):
        notes = [line for line in err.splitlines() if "disconnected" in line]
        assert len(notes) == 1 and re.fullmatch(rf"ramir: {re.escape(host)}:{port_} disconnected \(\w+\)",
                                                notes[0]), err
    assert "disconnected" not in said[2]
    others = [line for err in said for line in err.splitlines() if "disconnected" not in line]
    assert all('"POST /api/restore HTTP/1.1"' in line for line in others)


# ---------------------------------------------------------------------------------------- browser
@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser)"
)
def test_browser_upload_slider_download(base_url, tmp_path):
    from playwright.sync_api import sync_playwright

    src = tmp_path / "noisy photo.png"
    src.write_bytes(_png(45, 67, seed=3))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(base_url + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('tiny-test')")

            # a bad file: the server's message appears on the page
            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.body.dataset.state === 'error'", timeout=30_000)
            assert "not a readable image" in page.inner_text("#error")

            page.set_input_files("#file", str(src))
            page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
            assert not page.is_visible("#error")
            size = page.evaluate(
                "[document.getElementById('after').naturalWidth, "
                "document.getElementById('after').naturalHeight]"
            )
            assert size == [67, 45]

            page.fill("#slider", "20")  # the slider moves the clip of the restored image
            assert "20%" in page.eval_on_selector("#after", "el => el.style.clipPath")

            with page.expect_download() as info:
                page.click("#download")
            download = info.value
            assert download.suggested_filename == "noisy photo_restored.png"
            data = Path(download.path()).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert Image.open(io.BytesIO(data)).size == (67, 45)

            shot = tmp_path / "webapp.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 1000
        finally:
            browser.close()


def test_serve_picks_the_device_as_restore_does():
    from ramir.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).device == "auto"
    assert parser.parse_args(["restore", "x.png"]).device == "auto"
