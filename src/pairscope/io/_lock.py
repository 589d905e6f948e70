"""The writing lock: a run folder being written holds ``writing.lock`` (flock + PID).

The kernel releases an ``flock`` when its process dies (``kill -9``, power loss
reboots), so a lock file left behind by a crash is stale and a live one is not.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .._files import OutputLock
from . import layout as L


class RunLock(OutputLock):
    """An exclusive, non-blocking lock on a run folder (released by :meth:`release`)."""

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(run_dir, what="a run being acquired")
        self.path = Path(run_dir) / L.WRITING_LOCK

    def acquire(self) -> None:
        """Take the lock or raise :class:`BlockingIOError` (another writer holds it)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd


def lock_holder(run_dir: str | Path) -> int | None:
    """PID of the process writing ``run_dir`` (``-1`` if unknown), or ``None``."""
    path = Path(run_dir) / L.WRITING_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
