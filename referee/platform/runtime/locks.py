"""Advisory file locks (flock) between processes on one machine: one build, one pull, one GPU at a time."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def try_file_lock(path: Path) -> IO[str] | None:
    """An exclusive lock on ``path`` if nobody holds it (the open file: close it to let go), else None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fh
    except OSError:
        fh.close()
        return None
