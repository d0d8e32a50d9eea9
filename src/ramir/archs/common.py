"""Switch between the fast execution path and a straightforward reference path.

The straightforward path (explicit softmax attention, per-window Python loops) exists only so that
benchmarks can measure the fast path against it on the same weights; both give the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_STRAIGHTFORWARD = False


def straightforward_path_enabled() -> bool:
    return _STRAIGHTFORWARD


@contextlib.contextmanager
def straightforward_path(enabled: bool = True) -> Iterator[None]:
    """Within this context the networks use their slow, literal implementation."""
    global _STRAIGHTFORWARD
    previous, _STRAIGHTFORWARD = _STRAIGHTFORWARD, enabled
    try:
        yield
    finally:
        _STRAIGHTFORWARD = previous
