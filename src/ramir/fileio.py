"""Atomic file writes: a crash or a kill never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it over ``target``.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic.
    With ``overwrite=False`` an existing target is never replaced (``FileExistsError``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files (and some writers recreate the file): give the output the
        # permissions a plain open() would have, after the writer is done
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        if not overwrite:
            # link() fails if the target exists: no window in which another writer is clobbered.
            os.link(tmp_path, target)
            tmp_path.unlink()
        else:
            os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
