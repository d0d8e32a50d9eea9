"""``ramir`` command line: one thin module per sub-command, each calling the public API.

Every sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. User errors (:class:`ramir.errors.RamirError`, missing files, bad values) print
one line and exit non-zero; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from ramir._version import __version__
from ramir.errors import RamirError, first_line, step

# sub-command modules under ramir.cli, in the order --help lists them
COMMANDS = [
    "demo",
    "restore",
    "evaluate",
    "models",
    "info",
    "data",
    "pretrain",
    "mac",
    "finetune",
    "serve",
    "export",
]


def tile_size(text: str) -> int | str:
    """An argparse type for ``--tile``: ``auto``, 0 (whole images) or at least the tiling's minimum."""
    from ramir.inference import MIN_TILE

    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a number of pixels, 0 (whole image) or 'auto', got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0 or 0 < value < MIN_TILE:
        raise argparse.ArgumentTypeError(
            f"tile size must be 0 (whole images) or at least {MIN_TILE} pixels, got {value}"
        )
    return value


def memory_size(text: str) -> int:
    """An argparse type for ``--max-memory``: ``2G``, ``1.5GiB``, ``512M``, ``800MB`` or a byte count
    (binary units: 1G = 2**30 bytes)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if factor != 1 else t) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 2G or 512M, got {text!r}") from None
    if value < 256 << 20:
        raise argparse.ArgumentTypeError(f"must be at least 256M, got {text!r}")
    return int(value)


def add_ensemble_argument(parser: argparse.ArgumentParser) -> None:
    """``--ensemble N`` (restore, evaluate, serve): the view counts :mod:`ramir.ensemble` takes."""
    from ramir.ensemble import VIEWS

    parser.add_argument(
        "--ensemble", type=int, default=1, choices=list(VIEWS), metavar="{" + ",".join(map(str, VIEWS)) + "}",
        help="average this many flipped/turned restorations of each image, within the views each expert "
        "allows: up to that many times slower, slightly better (default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ramir", description="Blind all-in-one image restoration (RAM: Restore Anything with Masks)."
    )
    parser.add_argument("--version", action="version", version=f"ramir {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ramir.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ramir.cli.{name}":
                continue  # sub-command not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with step(f"ramir {args.command}"):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `ramir data verify ... | head`: the reader left, nothing to report
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at interpreter exit
        return 0
    except KeyboardInterrupt:
        print("ramir: interrupted", file=sys.stderr)
        return 130
    except (RamirError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError, KeyError) as exc:
        if args.debug:
            raise
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else first_line(exc)
        print(f"ramir: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unexpected failure: still one line, naming the step, pointing to --debug
        if args.debug:
            raise
        where = getattr(exc, "ramir_step", None)
        print(f"ramir: error: {where + ': ' if where else ''}{type(exc).__name__}: {first_line(exc)} "
              "(run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
