"""A local web page for restoring one image at a time, on the standard library's HTTP server.

No web framework: ``ThreadingHTTPServer`` serves the static page and one JSON/PNG endpoint. The model is
loaded once; a lock serialises inference (one network, one set of buffers), while uploads, decoding and
encoding run in parallel threads. At most ``max_queue`` restores wait behind the running one (each holds a
decoded image): further ones are refused at once with 503 and ``Retry-After`` rather than queued without
bound. A client that goes away mid-upload or before reading its answer is not an error of the server: it
is dropped silently (one line with ``verbose``), never with a traceback.

Routes:
    GET  /              the page (static/index.html)
    GET  /static/NAME   its script and style sheet
    GET  /api/info      {"model": ..., "max_upload_bytes": ..., "max_pixels": ..., "max_queue": ...}
    POST /api/restore   body: multipart/form-data with a file field, or the raw image bytes with an
                        ``image/*`` content type. Answers ``image/png`` (same size as the input), or a
                        JSON ``{"error": "..."}`` with 400 (not an image), 411, 413 (too large),
                        503 (busy, with ``Retry-After``) or 500.
"""

from __future__ import annotations

import io
import json
import math
import mimetypes
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ramir.errors import RamirError
from ramir.imageio import LoadedImage

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 4096 * 4096
# Restores that may wait behind the running one. Each holds its upload and decoded float image (up to
# ~200 MB at the pixel limit), so the queue bounds memory; beyond it a client is better told to retry.
DEFAULT_MAX_QUEUE = 4
# A client that vanished: nothing to answer and nothing wrong with the server.
_DISCONNECTS = (ConnectionError, TimeoutError)
# An over-size body is read and discarded up to this many bytes so the client receives the 413 instead
# of a connection reset; anything larger is cut off.
_DRAIN_LIMIT = 256 * 1024 * 1024


class SupportsRestore(Protocol):
    def restore(self, image: np.ndarray) -> np.ndarray: ...


class UploadError(Exception):
    """A request the page should explain to the user: carries the HTTP status."""

    def __init__(
        self, status: HTTPStatus, message: str, *, close: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close  # the body was not (fully) read: the connection cannot be reused
        self.headers = headers or {}


@dataclass
class RestoreService:
    """Everything a request needs: the restorer, its lock, the admission count and the limits."""

    restorer: SupportsRestore
    model_name: str = "model"
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_queue: int = DEFAULT_MAX_QUEUE
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0  # admitted restores: the running one plus those waiting for the lock
    seconds_per_restore: float = 1.0  # running average, for Retry-After
    _admission: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")

    def full(self) -> bool:
        """No room for one more restore (a hint: :meth:`admit` is the atomic check)."""
        return self.in_flight > self.max_queue

    def admit(self) -> bool:
        """Take a place in the queue, or False when the running restore plus ``max_queue`` hold them all."""
        with self._admission:
            if self.in_flight > self.max_queue:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._admission:
            self.in_flight -= 1

    def busy_error(self) -> UploadError:
        """503 with the queue length and a Retry-After guessed from the recent restore time."""
        n = self.max_queue + 1  # refused means full; in_flight may already have dropped since
        retry = max(1, min(300, math.ceil(self.seconds_per_restore * n)))
        waiting = f"{n} request is waiting" if n == 1 else f"{n} requests are waiting"
        return UploadError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"busy: {waiting}; try again shortly",
            headers={"Retry-After": str(retry)},
        )

    @property
    def experts(self) -> list[str]:
        """The restorations a user may choose (a routed model's experts; [] for a plain network)."""
        return list(getattr(self.restorer, "expert_names", []) or [])

    def restore_png(self, data: bytes, expert: str | None = None) -> bytes:
        """Encoded image bytes in, restored PNG bytes out: same size, and the upload's alpha, grey mode
        and ICC profile kept, as ``ramir restore`` keeps them (:mod:`ramir.imageio`)."""
        return self.restore_explained(data, expert)[0]

    def restore_explained(self, data: bytes, expert: str | None = None) -> tuple[bytes, dict[str, str]]:
        """:meth:`restore_png` and what was done: ``{"applied": "noise (p 0.93)", "experts": "noise"}``
        (empty for a plain network). ``expert`` forces the restoration(s) of a routed model."""
        loaded = decode_upload(data, self.max_pixels)
        if expert is not None and not self.experts:
            raise UploadError(HTTPStatus.BAD_REQUEST, "this model has no experts to choose from")
        if expert is not None:
            from ramir.routing import parse_experts

            try:
                parse_experts(expert, self.experts)
            except RamirError as exc:
                raise UploadError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        with self.lock:
            started = time.perf_counter()
            if expert is None:
                out = self.restorer.restore(loaded.rgb)
            else:
                out = self.restorer.restore(loaded.rgb, expert=expert)  # type: ignore[call-arg]
            self.seconds_per_restore = 0.7 * self.seconds_per_restore + 0.3 * (time.perf_counter() - started)
            decisions = list(getattr(self.restorer, "last_decisions", []) or []) if self.experts else []
        out = np.asarray(out)
        if out.shape != loaded.rgb.shape:
            raise RuntimeError(f"restorer returned shape {out.shape} for input {loaded.rgb.shape}")
        told = {}
        if decisions:
            told = {"applied": decisions[0].describe(), "experts": ",".join(decisions[0].experts)}
        return encode_png(out, loaded), told


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Encoded bytes -> :class:`ramir.imageio.LoadedImage` (float32 RGB in [0, 1] plus what is needed to
    write it back); :class:`UploadError` (400) for anything that is not a decodable image."""
    from PIL import Image, UnidentifiedImageError

    from ramir.imageio import from_pil

    if not data:
        raise UploadError(HTTPStatus.BAD_REQUEST, "the upload is empty: choose an image file")
    hint = "upload a PNG, JPEG, BMP, TIFF or WebP file"
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise UploadError(
                    HTTPStatus.BAD_REQUEST, f"image is {w}x{h} pixels; the limit is {max_pixels:,} pixels"
                )
            im.load()
            return from_pil(im)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"not a readable image: {hint}") from None
    except Image.DecompressionBombError:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"too many pixels; the limit is {max_pixels:,}") from None
    except (OSError, ValueError, SyntaxError, EOFError, RamirError) as exc:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"cannot decode the image ({exc}): {hint}") from None


def encode_png(image01: np.ndarray, like: LoadedImage | None = None) -> bytes:
    """Restored float [0, 1] RGB HWC -> PNG bytes, in ``like``'s mode (alpha, grey) when given."""
    from PIL import Image

    from ramir.imageio import to_pil

    if like is None:
        u8 = np.clip(np.rint(np.asarray(image01, dtype=np.float32) * np.float32(255)), 0, 255).astype(
            np.uint8
        )
        im = Image.fromarray(u8, mode="RGB")
    else:
        im = to_pil(image01, like)
        if im.mode not in ("RGB", "RGBA", "L", "LA", "1", "I;16"):
            im = im.convert("RGBA" if like.alpha is not None else "RGB")  # e.g. CMYK: not a PNG mode
    buf = io.BytesIO()
    icc = like.icc_profile if like is not None else None
    im.save(buf, format="PNG", **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """'form-data; name="image"; filename="a.png"' -> ('form-data', {'name': 'image', ...})."""
    main, *rest = value.split(";")
    params = {}
    for item in rest:
        key, sep, val = item.strip().partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1].replace('\\"', '"')
            params[key.strip().lower()] = val
    return main.strip().lower(), params


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Split a multipart/form-data body into ``{field name: (filename or None, bytes)}``.

    A small replacement for the ``cgi`` module (removed in Python 3.13): parts are separated by
    ``--boundary`` lines; each has headers, a blank line and content ending just before CRLF--boundary.
    """
    kind, params = _header_params(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise UploadError(HTTPStatus.BAD_REQUEST, "expected multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    # every delimiter line is preceded by CRLF except possibly the first: prepend one to make it uniform
    parts = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(parts) < 2:
        raise UploadError(HTTPStatus.BAD_REQUEST, "malformed multipart body: boundary not found")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in parts[1:]:  # parts[0] is the preamble
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        line_end = chunk.find(b"\r\n")  # skip transport padding after the delimiter
        if line_end < 0:
            continue
        chunk = chunk[line_end + 2 :]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        disposition, dparams = _header_params(headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in dparams:
            continue
        fields[dparams["name"]] = (dparams.get("filename"), content)
    return fields


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode("utf-8")


def create_app(
    restorer: SupportsRestore | RestoreService, **service_kwargs: Any
) -> type[BaseHTTPRequestHandler]:
    """A request-handler class bound to ``restorer`` (wrapped in a :class:`RestoreService`)."""
    service = restorer if isinstance(restorer, RestoreService) else RestoreService(restorer, **service_kwargs)

    class Handler(BaseHTTPRequestHandler):
        server_version = "ramir"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            if getattr(self.server, "verbose", False):
                super().log_message(format, *args)

        # --- responses -------------------------------------------------------------------------------
        def _send(
            self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
            self._send(status, _json({"error": message}), "application/json", extra)

        # --- GET ------------------------------------------------------------------------------------
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :])
            if path == "/api/info":
                info = {
                    "model": service.model_name,
                    "max_upload_bytes": service.max_upload_bytes,
                    "max_pixels": service.max_pixels,
                    "max_queue": service.max_queue,
                    "experts": service.experts,
                }
                return self._send(HTTPStatus.OK, _json(info), "application/json")
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

        do_HEAD = do_GET

        def _static(self, name: str) -> None:
            # only plain file names inside static/: no traversal
            if "/" in name or "\\" in name or name.startswith(".") or not (STATIC_DIR / name).is_file():
                return self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype == "application/javascript":
                ctype += "; charset=utf-8"
            self._send(HTTPStatus.OK, (STATIC_DIR / name).read_bytes(), ctype)

        # --- POST -----------------------------------------------------------------------------------
        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != "/api/restore":
                return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
            from urllib.parse import parse_qs, urlsplit

            chosen = parse_qs(urlsplit(self.path).query).get("expert", [None])[0] or None
            # A vanished client (ConnectionError, TimeoutError) is not caught here: it ends the request
            # and reaches the server's handle_error, which drops it without a traceback.
            try:
                data = self._read_upload()
                if not service.admit():
                    raise service.busy_error()
            except UploadError as exc:
                self.close_connection = self.close_connection or exc.close
                return self._error(exc.status, exc.message, exc.headers)
            try:
                started = time.perf_counter()
                png, told = service.restore_explained(data, chosen)
                elapsed = time.perf_counter() - started
            except RamirError as exc:  # e.g. an image smaller than the network's window
                return self._error(HTTPStatus.BAD_REQUEST, str(exc))
            except UploadError as exc:
                return self._error(exc.status, exc.message, exc.headers)
            except Exception as exc:  # a failure of the model: tell the page, keep serving
                self.log_error("restore failed: %r", exc)
                return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"restoration failed: {exc}")
            finally:
                del data  # the upload's memory goes before a slow client reads the answer
                service.release()
            extra = {"X-Restore-Seconds": f"{elapsed:.3f}"}
            if told:  # ASCII by construction: expert names, digits, arrows written as ->
                extra |= {"X-Ramir-Applied": told["applied"], "X-Ramir-Experts": told["experts"]}
            self._send(HTTPStatus.OK, png, "image/png", extra)

        def _read_upload(self) -> bytes:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                raise UploadError(
                    HTTPStatus.LENGTH_REQUIRED, "the upload needs a Content-Length header", close=True
                )
            try:
                length = int(length_header)
            except ValueError:
                length = -1
            if length < 0:
                raise UploadError(HTTPStatus.BAD_REQUEST, "invalid Content-Length header", close=True)
            limit = service.max_upload_bytes
            if length > limit:
                self._drain(length)
                raise UploadError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"upload is {length / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB",
                    close=True,
                )
            if service.full():  # refuse before buffering an upload that could not be queued anyway
                self._drain(length)
                raise service.busy_error()
            body = self.rfile.read(length)
            if len(body) != length:
                raise UploadError(HTTPStatus.BAD_REQUEST, "the upload was cut off", close=True)
            content_type = self.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/"):
                fields = parse_multipart(body, content_type)
                files = [content for filename, content in fields.values() if filename is not None]
                if not files:
                    raise UploadError(HTTPStatus.BAD_REQUEST, "the form holds no file: choose an image")
                return files[0]
            return body

        def _drain(self, length: int) -> None:
            remaining = min(length, _DRAIN_LIMIT)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)

    Handler.service = service  # type: ignore[attr-defined]
    return Handler


class RestoreServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` whose per-request failures are one line, and client disconnects none."""

    daemon_threads = True
    request_queue_size = 64  # listen backlog: a burst of connections waits for accept() instead of a reset
    verbose = False
    service: RestoreService

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback for anything a handler raised, including the
        # BrokenPipe/ConnectionReset of a client that closed its tab or its socket mid-request.
        exc = sys.exc_info()[1]
        who = f"{client_address[0]}:{client_address[1]}" if isinstance(client_address, tuple) else "client"
        if isinstance(exc, _DISCONNECTS):
            if self.verbose:
                print(f"ramir: {who} disconnected ({type(exc).__name__})", file=sys.stderr, flush=True)
            return
        print(f"ramir: error serving {who}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def make_server(
    restorer: SupportsRestore | RestoreService,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    verbose: bool = False,
    **service_kwargs: Any,
) -> RestoreServer:
    """A ready (not yet serving) HTTP server; port 0 picks a free port (see ``server.server_address``).

    ``service_kwargs`` go to :class:`RestoreService` (``model_name``, ``max_upload_bytes``, ``max_pixels``,
    ``max_queue``); the service is ``server.service``.
    """
    handler = create_app(restorer, **service_kwargs)
    server = RestoreServer((host, port), handler)
    server.service = handler.service  # type: ignore[attr-defined]
    server.verbose = verbose
    return server
