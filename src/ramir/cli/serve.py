"""``ramir serve``: the local web page (upload, before/after slider, download), see :mod:`ramir.web`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ramir.cli import add_ensemble_argument, memory_size, tile_size
from ramir.errors import ConfigError, RamirError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the local web app (upload an image, compare, download)",
        description=(
            "Serve a web page that restores uploaded images with one model, loaded once. "
            "Uses only Python's standard HTTP server; binds to 127.0.0.1 by default so the page is "
            "reachable from this machine only."
        ),
    )
    p.add_argument(
        "--model",
        metavar="PATH_OR_NAME",
        help="checkpoint file or built-in model name (default: the built-in weights, if any)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="port, 0 = any free port (default: %(default)s)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        help="largest accepted upload in MB; larger ones get HTTP 413 (default: %(default)s)",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=16.8,
        help="largest accepted image size in megapixels (default: %(default)s)",
    )
    p.add_argument(
        "--device", default="auto",
        help="torch device: auto (cuda > mps > cpu, as restore), cpu, cuda, cuda:1 (default: %(default)s)"
    )
    p.add_argument(
        "--tile", type=tile_size, default=None,
        help="restore in tiles of this size (default: auto, the largest that fit --max-memory)"
    )
    p.add_argument(
        "--max-memory", type=memory_size, default=None, metavar="SIZE",
        help="memory one restore plans to stay within, e.g. 4G (default 2G)"
    )
    p.add_argument(
        "--max-queue", type=int, default=4, metavar="N",
        help="restores that may wait behind the running one; more get HTTP 503 with Retry-After "
        "(default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    add_ensemble_argument(p)
    p.add_argument("--verbose", action="store_true", help="log every request (and client disconnects)")
    p.set_defaults(func=run)


def load_restorer(
    model: str | None, device: str, tile: int | str | None, max_memory: int | None = None, ensemble: int = 1
):
    """The same Restorer the ``restore`` command uses; a clear error when there is nothing to serve."""
    from ramir.inference import load

    kwargs: dict = {"tile": tile} if tile is not None else {}
    kwargs["ensemble"] = ensemble
    kwargs["announce"] = lambda line: print(line, file=sys.stderr, flush=True)
    if max_memory:
        kwargs["max_memory"] = max_memory
    if model is None:
        try:
            return load(None, device=device, **kwargs)
        except RamirError as exc:
            raise ConfigError(f"no model to serve: {exc}") from None
    return load(model, device=device, **kwargs)


def run(args: argparse.Namespace) -> int:
    from ramir.web.server import make_server

    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ConfigError("--max-upload-mb and --max-megapixels must be positive")
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be 0 or more, got {args.max_queue}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be 1 or more, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    restorer = load_restorer(args.model, args.device, args.tile, args.max_memory, args.ensemble)
    name = getattr(restorer, "name", "") or (Path(args.model).name if args.model else "default")
    try:
        server = make_server(
            restorer,
            args.host,
            args.port,
            verbose=args.verbose,
            model_name=name,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            max_pixels=int(args.max_megapixels * 1e6),
            max_queue=args.max_queue,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another --port"
        ) from None
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"ramir: serving {name} at http://{shown}:{port}/  (Ctrl+C to stop)", file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("ramir: note: the page is reachable from other machines on this network", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("ramir: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
