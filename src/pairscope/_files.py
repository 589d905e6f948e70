"""Crash-safe small-file writes shared by run folders, calibrations and models, and
the words for why a file could not be written."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path
from types import TracebackType

from .errors import OutputError

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit was reached",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied (the folder is read-only?)",
    errno.EPERM: "operation not permitted (the folder is read-only?)",
    errno.ENOENT: "the folder was removed or moved",
}
#: errors that say a folder cannot be written at all (not "is busy" or "is full")
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def os_reason(exc: OSError) -> str:
    """Why an OS call failed, in words ("the disk is full", ...)."""
    return _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)


def os_problem(exc: OSError) -> str:
    """An OS error as one line: the file, the reason and, for a write, the fix."""
    where = f"{exc.filename}: " if exc.filename else ""
    text = f"{where}{os_reason(exc)}"
    if (exc.errno or 0) in _REASONS:
        text += (
            "; nothing written was lost. Free space, raise the limit or choose a "
            "writable folder, then try again"
        )
    return text


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one.

    The bytes go to a temporary file beside ``path``, are fsynced, and the file is
    renamed over ``path``.  A failed write (full disk, file-size limit, read-only
    folder) removes the temporary file and raises :class:`OutputError`: the old
    file, if any, is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        kept = "the previous file is unchanged" if path.exists() else "nothing written"
        raise OutputError(
            f"Cannot write {path}: {os_reason(exc)} ({kept}). Free space, raise the "
            "limit or choose a writable folder, then try again.",
            errno=exc.errno,
        ) from exc


def check_writable(folder: str | Path, *, what: str, fix: str) -> None:
    """Raise :class:`OutputError` unless a new file can be created in ``folder``
    (a real probe: catches read-only mounts, permissions and immutable folders).

    ``what`` names the work that would write there, ``fix`` what to do instead.
    """
    folder = Path(folder)
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".pairscope-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"{folder} is not writable ({os_reason(exc)}), so {what} could not be "
            f"saved there; {fix}",
            errno=exc.errno,
        ) from exc


class OutputLock:
    """An exclusive hold on an output path while one process writes it.

    ``path.lock`` beside the output holds an ``flock`` and the holder's PID (the
    kernel drops it when the process dies, so a crash leaves no stale lock); a
    second writer of the same output is refused at once with
    :class:`OutputError`.  Use as a context manager.
    """

    def __init__(self, path: str | Path, *, what: str) -> None:
        path = Path(path)
        self.path = path.with_name(path.name + ".lock")
        self.target = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputError` naming the holder."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                who = f"process {text}" if text.isdigit() else "another process"
                raise OutputError(
                    f"{self.target} is being written by {who} ({self.what}); wait "
                    "for it to finish or choose another output",
                    errno=errno.EBUSY,
                ) from None
            except OSError:
                os.close(fd)
                raise
            # the holder before us may have removed the file after we opened it:
            # then this lock guards nothing, take the new file's
            try:
                same = self.path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def make_parents(path: str | Path) -> list[Path]:
    """Create the missing folders above ``path``; return those created, outermost
    first (for :func:`remove_empty` when the work fails)."""
    missing = [p for p in Path(path).parents if not p.exists()][::-1]
    for folder in missing:
        folder.mkdir(exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (outermost first) that are empty, innermost first:
    a failed start leaves no empty folder."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()
