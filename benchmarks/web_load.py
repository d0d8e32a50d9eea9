"""Load test of ``ramir serve``: concurrent, slow and disconnecting clients against a real server process.

Run by hand from the repository root (not part of the tests or of ``python -m benchmarks``):

    python -m benchmarks.web_load --clients 8 --requests 40 --size 256 --threads 1
    python -m benchmarks.web_load --model path/to/model.safetensors --duration 60 --out web_load.json

Starts ``ramir serve`` on 127.0.0.1 on a free port (``--port 0``; the address is read from its first
line), then ``--clients`` threads issue ``--requests`` uploads in all, stopping early at ``--duration``
seconds. A share of them are slow (the upload dribbled in small chunks with sleeps) and a share disconnect
(half the upload then close, or the whole upload then close before the answer), so the server's queue
bound (503), its serialised restores and its handling of vanished clients are exercised together.

Reported: requests issued, responses by status (200 / 503 / other 4xx / other), client-side errors by
kind, p50/p95 latency of the 200s (and of the 503s: they should be immediate), the server's peak RSS
(VmHWM, plus the RSS once the model is loaded), the 'Traceback' lines in its stderr (should be 0), and
whether one more request succeeds afterwards. Latencies include the queue wait: with ``--clients``
above ``--max-queue`` + 1 most time is spent waiting for the one model.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

KINDS = ("normal", "slow", "drop_upload", "drop_response")


def make_pngs(width: int, height: int, count: int = 4) -> list[bytes]:
    """A few distinct noisy PNGs (noise: the worst case for the upload size, restore time is the same)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        base = rng.integers(0, 256, (1, 1, 3)) * np.ones((height, width, 3))
        img = np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _proc_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class Server:
    """``ramir serve`` as a child process, its stderr in a file (read at the end for tracebacks)."""

    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "ramir", "serve", "--host", "127.0.0.1", "--port", "0"]
        if args.model:
            cmd += ["--model", args.model]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.max_queue is not None:
            cmd += ["--max-queue", str(args.max_queue)]
        cmd += ["--device", args.device]
        self.cmd = cmd
        self.stderr_path = Path(tempfile.mkstemp(prefix="ramir-serve-", suffix=".log")[1])
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.port = 0

    def wait_ready(self, timeout: float) -> None:
        """Until the 'serving ... at http://127.0.0.1:PORT/' line (the model is loaded then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"at http://[^:/]+:(\d+)/", self.stderr())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                last = self.stderr().strip().splitlines()[-1:] or [""]
                raise SystemExit(f"web_load: ramir serve exited ({self.proc.returncode}): {last[0]}")
            time.sleep(0.1)
        raise SystemExit(f"web_load: ramir serve not ready after {timeout:.0f} s")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGINT (ramir serve's Ctrl+C path), then kill if it lingers; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._stderr.close()
        return self.proc.returncode


class RssSampler(threading.Thread):
    """Samples the server's VmRSS (KiB) every ``period`` seconds: VmHWM alone would hide when it peaked."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kib = max(self.peak_kib, _proc_kib(self.pid, "VmRSS") or 0)
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _request_head(port: int, length: int) -> bytes:
    return (
        f"POST /api/restore HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _dribble(body: bytes, chunk: int, pause: float) -> Iterator[bytes]:
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]
        time.sleep(pause)


def one_request(kind: str, port: int, body: bytes, args: argparse.Namespace) -> dict:
    """One client request of the given kind; a dict with what happened (never raises)."""
    started = time.perf_counter()
    result: dict = {"kind": kind, "status": None, "error": None}
    try:
        if kind in ("drop_upload", "drop_response"):
            with socket.create_connection(("127.0.0.1", port), timeout=args.timeout) as sock:
                if kind == "drop_upload":
                    sock.sendall(_request_head(port, len(body)) + body[: len(body) // 2])
                    time.sleep(args.chunk_sleep)
                else:
                    sock.sendall(_request_head(port, len(body)) + body)
                    time.sleep(0.05)  # the server has it, likely queued or restoring: now vanish
            result["status"] = "dropped"
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
            try:
                payload = _dribble(body, args.chunk_bytes, args.chunk_sleep) if kind == "slow" else body
                headers = {"Content-Type": "image/png", "Content-Length": str(len(body))}
                conn.request("POST", "/api/restore", body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                result["status"] = resp.status
                result["retry_after"] = resp.getheader("Retry-After")
                if resp.status == 200 and not data.startswith(b"\x89PNG\r\n\x1a\n"):
                    result["error"] = "200 without a PNG"
                elif resp.status != 200:
                    result["message"] = data[:200].decode("utf-8", "replace")
            finally:
                conn.close()
    except Exception as exc:  # a client-side failure: counted by kind, the run goes on
        result["error"] = type(exc).__name__
    result["seconds"] = time.perf_counter() - started
    return result


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> dict:
    from benchmarks.common import cpu_model

    pngs = make_pngs(args.size, args.size)
    rng = random.Random(args.seed)
    half_drop = args.drop_share / 2
    shares = [1 - args.slow_share - args.drop_share, args.slow_share, half_drop, half_drop]
    plan = [rng.choices(KINDS, weights=shares)[0] for _ in range(args.requests)]

    server = Server(args)
    results: list[dict] = []
    try:
        server.wait_ready(args.ready_timeout)
        rss_loaded_kib = _proc_kib(server.proc.pid, "VmRSS")
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        lock = threading.Lock()
        next_index = iter(range(len(plan)))
        deadline = time.monotonic() + args.duration

        def client() -> None:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                out = one_request(plan[i], server.port, pngs[i % len(pngs)], args)
                with lock:
                    results.append(out)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + args.timeout + 5)
        wall = time.perf_counter() - started
        time.sleep(0.5)  # let the server finish the handlers of the dropped connections
        final = one_request("normal", server.port, pngs[0], args)
        sampler.stop()
        hwm_kib = _proc_kib(server.proc.pid, "VmHWM")
        alive = server.proc.poll() is None
    finally:
        code = server.stop()
    stderr = server.stderr()
    server.stderr_path.unlink(missing_ok=True)

    answered = [r for r in results if isinstance(r["status"], int)]
    by_status = Counter(
        "200" if r["status"] == 200 else "503" if r["status"] == 503
        else "4xx" if 400 <= r["status"] < 500 else "other"
        for r in answered
    )
    ok_seconds = [r["seconds"] for r in answered if r["status"] == 200 and not r["error"]]
    busy_seconds = [r["seconds"] for r in answered if r["status"] == 503]
    messages = sorted({r["message"] for r in answered if r.get("message")})
    return {
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], "-m", "benchmarks.web_load", *sys.argv[1:]]),
        "server_command": " ".join(server.cmd),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "image_bytes": [len(p) for p in pngs],
        "wall_seconds": round(wall, 2),
        "requests": len(results),
        "requests_by_kind": dict(Counter(r["kind"] for r in results)),
        "responses": {k: by_status.get(k, 0) for k in ("200", "503", "4xx", "other")},
        "dropped_on_purpose": sum(r["status"] == "dropped" for r in results),
        "client_errors": dict(Counter(f"{r['kind']}: {r['error']}" for r in results if r["error"])),
        "error_messages": messages[:5],
        "latency_200_s": {"p50": _percentile(ok_seconds, 0.5), "p95": _percentile(ok_seconds, 0.95)},
        "latency_503_s": {"p50": _percentile(busy_seconds, 0.5), "p95": _percentile(busy_seconds, 0.95)},
        "server_rss_loaded_mib": rss_loaded_kib / 1024 if rss_loaded_kib else None,
        "server_peak_rss_mib": hwm_kib / 1024 if hwm_kib else None,
        "server_peak_rss_sampled_mib": sampler.peak_kib / 1024 if sampler.peak_kib else None,
        "server_traceback_lines": sum("Traceback" in line for line in stderr.splitlines()),
        "server_stderr_lines": len(stderr.splitlines()),
        "server_alive_at_end": alive,
        "final_request": final["status"] if not final["error"] else final["error"],
        "server_exit_code": code,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def print_table(r: dict) -> None:
    size, kib = r["settings"]["size"], statistics.mean(r["image_bytes"]) / 1024
    tracebacks, lines = r["server_traceback_lines"], r["server_stderr_lines"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["requests_by_kind"].items()))
    ok, busy = r["latency_200_s"], r["latency_503_s"]
    rss = (
        f"{_fmt(r['server_rss_loaded_mib'], ' MiB')} / {_fmt(r['server_peak_rss_mib'], ' MiB')} "
        f"(VmHWM; sampled VmRSS {_fmt(r['server_peak_rss_sampled_mib'], ' MiB')})"
    )
    rows = [
        ("CPU", f"{r['cpu']} ({r['cpus']} logical CPUs)"),
        ("server", r["server_command"]),
        ("image", f"{size}x{size} PNG, ~{kib:.0f} KiB"),
        ("clients / wall", f"{r['settings']['clients']} / {r['wall_seconds']:.1f} s"),
        ("requests (by kind)", f"{r['requests']}  ({kinds})"),
        ("responses", ", ".join(f"{k}: {v}" for k, v in r["responses"].items())),
        ("dropped on purpose", str(r["dropped_on_purpose"])),
        ("client errors", ", ".join(f"{k} x{v}" for k, v in r["client_errors"].items()) or "none"),
        ("latency 200 p50 / p95", f"{_fmt(ok['p50'], ' s')} / {_fmt(ok['p95'], ' s')}"),
        ("latency 503 p50 / p95", f"{_fmt(busy['p50'], ' s')} / {_fmt(busy['p95'], ' s')}"),
        ("server RSS loaded / peak", rss),
        ("server 'Traceback' lines", f"{tracebacks} (stderr: {lines} lines)"),
        ("request afterwards", str(r["final_request"])),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for message in r["error_messages"]:
        print(f"{'error message':<{width}}  {message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint or model name for ramir serve (default: its default)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=40, help="requests in all (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=300.0,
                        help="stop issuing requests after this many seconds (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--slow-share", type=float, default=0.2,
                        help="share of slow uploads (default: %(default)s)")
    parser.add_argument("--drop-share", type=float, default=0.2,
                        help="share of disconnecting clients, half mid-upload, half before the answer "
                        "(default: %(default)s)")
    parser.add_argument("--chunk-bytes", type=int, default=8192,
                        help="slow upload chunk in bytes (default: %(default)s)")
    parser.add_argument("--chunk-sleep", type=float, default=0.02,
                        help="pause after each slow chunk, seconds (default: %(default)s)")
    parser.add_argument("--max-queue", type=int, default=None,
                        help="ramir serve --max-queue (default: the server's)")
    parser.add_argument("--threads", type=int, default=1, help="ramir serve --threads (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="ramir serve --device (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="client socket timeout, seconds (default: %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds to wait for the server to load its model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix (default: %(default)s)")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.size < 8 or args.duration <= 0:
        parser.error("--clients and --requests must be >= 1, --size >= 8 and --duration > 0")
    if min(args.slow_share, args.drop_share) < 0 or args.slow_share + args.drop_share > 1:
        parser.error("--slow-share and --drop-share must be >= 0 and sum to at most 1")
    from benchmarks.common import describe_machine

    print(describe_machine(), flush=True)
    result = run(args)
    print_table(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["server_traceback_lines"] == 0 and result["final_request"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
