"""Exceptions that the CLI turns into one clear line (no traceback unless --debug)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class RamirError(Exception):
    """Base class: a problem the user can fix (bad input, bad file, bad config)."""


class CheckpointError(RamirError):
    """A file is not a checkpoint, is truncated, or holds an unknown or mismatched network."""


class ImageError(RamirError):
    """An image cannot be read, decoded or written."""


class DataError(RamirError):
    """A dataset is empty, unpaired or unreadable."""


class ConfigError(RamirError):
    """A recipe or override is invalid (unknown key, wrong type)."""


def reject_unknown_keys(mapping: object, allowed: set[str] | frozenset[str], where: str) -> None:
    """Raise ConfigError naming every key of ``mapping`` not in ``allowed``, and the allowed ones:
    a typo in a recipe or suite must fail loudly, never be ignored."""
    unknown = set(mapping) - set(allowed)  # type: ignore[arg-type]
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {valid}")


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Name the step an unexpected error escapes from (``with step("exporting to ONNX"): ...``).

    Errors from torch, onnx or PIL internals say what failed inside the library, not what the user
    asked for; the CLI prints ``ramir: error: WHAT: Type: first line`` from this. The innermost step
    wins; :class:`RamirError` passes untouched (its message already speaks to the user)."""
    try:
        yield
    except RamirError:
        raise
    except Exception as exc:
        if getattr(exc, "ramir_step", None) is None:
            with contextlib.suppress(AttributeError, TypeError):
                exc.ramir_step = what  # type: ignore[attr-defined]
        raise


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (library errors can run to pages)."""
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= limit else text[: limit - 3] + "..."
    return type(exc).__name__
