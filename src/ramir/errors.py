"""Exceptions that the CLI turns into one clear line (no traceback unless --debug)."""

from __future__ import annotations


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
