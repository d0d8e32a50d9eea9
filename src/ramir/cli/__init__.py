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

from ramir import __version__
from ramir.errors import RamirError

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
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"ramir: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unexpected failure: still one line, with a pointer to --debug
        if args.debug:
            raise
        print(f"ramir: error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
