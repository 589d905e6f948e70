"""Crash-safe paired-data writer: each detector's frames plus a pairs manifest.

The frames go to the run's storage (:mod:`pairscope.io._storage`: a BigTIFF per
detector, or an OME-Zarr store) while they arrive and are made durable; only then is the
pair's line appended to ``pairs.jsonl`` and fsynced, so every manifest line names
frames that are readable after a ``kill -9``.  Work is group-committed: the pairs
arriving within ``commit_interval_s`` cost one fsync per file.

The writer fails safe: any error (full disk, a folder removed or turned read-only, a
bad frame, a bug) stops it; ``submit`` then raises :class:`WriterError` at once, the
pairs already listed stay readable, and :meth:`RunWriter.close` still finalises what
is on disk (:func:`pairscope.io._finalize.finalize_run`: OME-XML, ``run.json`` with
``pairs_written`` counted from the manifest).  While it writes, the folder holds
``writing.lock`` (flock + PID), so ``pairscope repair`` leaves it alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from .._files import os_reason
from ..errors import WriterError
from . import layout as L
from ._finalize import finalize_run, json_default, read_manifest, write_json
from ._lock import RunLock
from ._storage import FrameFile, FrameRefused, storage_named

logger = logging.getLogger(__name__)
_STOP = object()


def new_run_dir(root: str | Path, name: str = "run") -> Path:
    """Create a fresh run folder under ``root``; never reuses an existing one."""
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = root / f"{stamp}_{name}" if n == 0 else root / f"{stamp}_{name}-{n}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise WriterError(
            f"Cannot create a run folder in {root}: {exc.strerror or exc}. Choose a "
            "writable output folder (--out) with free space.",
            pairs_written=0,
        ) from exc
    raise WriterError(
        f"Too many runs named {name!r} in {root} this second.", pairs_written=0
    )


class RunWriter:
    """Writes pairs to a new run folder on its own thread, behind a bounded queue.

    ``submit`` blocks while the queue is full (back-pressure: a slow disk slows the
    acquisition, it never drops data) and raises :class:`WriterError` as soon as
    writing failed or the writer was cancelled/closed.  A pair whose ``lowdose`` is
    ``None`` (its low-dose partner was lost) is written with its reference only.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        name: str = "run",
        queue_size: int = 64,
        commit_interval_s: float = 0.1,
        reserve_bytes: int = 4 << 20,
        format: str = "ome-tiff",
    ) -> None:
        self._storage = storage_named(format)  # an unknown format: ValueError
        self._storage.check_available()
        self.format = format
        self.run_dir = new_run_dir(root, name)
        self._lock = RunLock(self.run_dir)
        try:
            self._lock.acquire()
            st = self.run_dir.stat()
        except OSError as exc:
            raise WriterError(
                f"Cannot lock the new run folder {self.run_dir}: {exc}. Choose a "
                "local, writable output folder (--out).",
                pairs_written=0,
            ) from exc
        self._dir_id = (st.st_dev, st.st_ino)
        self.commit_interval_s = commit_interval_s
        self.reserve_bytes = reserve_bytes
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._max_batch = max(1, queue_size // 2)
        self._thread: threading.Thread | None = None
        self._error: WriterError | None = None
        self._closing = threading.Event()
        self._closed = False
        self._written = 0
        self._submitted = 0
        self._lost = 0
        self._files: dict[str, FrameFile] = {}
        self._manifest: Any = None
        self._info: dict[str, Any] = {}

    @property
    def pairs_written(self) -> int:
        return self._written

    def discard_unstarted(self) -> None:
        """Remove the run folder of a run refused before it started (nothing was
        written to it but its lock), so a failed start leaves no empty folder."""
        if self._info or self._closed:
            return
        self._closed = True
        self._lock.release()
        with contextlib.suppress(OSError):  # something else put a file there
            self.run_dir.rmdir()

    @property
    def error(self) -> WriterError | None:
        return self._error

    def start(self, info: dict[str, Any]) -> None:
        """Record how the run is acquired and start the writing thread."""
        self._info = {
            **info,
            "run_id": uuid.uuid4().hex,
            "started": datetime.now().isoformat(),
            "status": "running",
            "writer_pid": os.getpid(),
            "format": self.format,
        }
        try:
            # the manifest exists before run.json says "running": a kill in between
            # leaves a run folder that repair can finalise (with 0 pairs)
            self._manifest = open(self.run_dir / L.MANIFEST, "a", encoding="utf-8")  # noqa: SIM115
            write_json(self.run_dir / L.RUN_INFO, self._info)
            self._reserve()
            for role in L.ROLES:
                self._files[role] = self._storage.open_frames(self.run_dir, role)
        except Exception as exc:
            self._error = self._fail(exc)
            self._abort_files()
            raise self._error from exc
        self._thread = threading.Thread(
            target=self._loop, name="pairscope-writer", daemon=True
        )
        self._thread.start()

    def submit(self, pair: Any) -> None:
        """Queue a pair for writing (blocks while the queue is full).

        Raises :class:`WriterError` once writing failed, or after :meth:`cancel`
        or :meth:`close` (also while blocked on a full queue).
        """
        while True:
            if self._error is not None:
                raise self._error
            if self._closing.is_set() or self._thread is None:
                raise WriterError(
                    f"The writer of {self.run_dir} is not accepting pairs (not "
                    "started, cancelled or closed).",
                    pairs_written=self._written,
                )
            try:
                self._queue.put(pair, timeout=0.05)
                self._submitted += 1
                return
            except queue.Full:
                continue

    def cancel(self) -> None:
        """Stop accepting pairs (a blocked ``submit`` raises); queued ones are kept."""
        self._closing.set()

    def close(self, summary: dict[str, Any] | None = None) -> int:
        """Write what is queued, finalise the folder; returns the pairs on disk.

        Always finalises what it can (OME-XML, ``run.json``: ``pairs_written``
        counted from the manifest, the status, the error) and raises the
        :class:`WriterError` if writing or finalising failed.
        """
        if self._closed:
            if self._error is not None:
                raise self._error
            return self._written
        self._closed = True
        self._closing.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        for f in self._files.values():
            if self._error is not None:
                f.abort()
                continue
            try:
                f.close()
            except Exception as exc:  # e.g. the disk filled while closing
                self._error = self._error or self._fail(exc)
                f.abort()
        if self._manifest is not None:
            with contextlib.suppress(OSError):
                self._manifest.close()
        self._unreserve()
        summary = dict(summary or {})
        status = "failed" if self._error else summary.get("status", "completed")
        extra: dict[str, Any] = {
            "finished": datetime.now().isoformat(),
            "summary": summary,
            "pairs_submitted": self._submitted,
            "pairs_not_written": self._lost,
        }
        if self._error is not None:
            extra["writer_error"] = str(self._error)
        try:
            self._written = finalize_run(
                self.run_dir, status=status, extra_info=extra
            ).pairs
        except Exception as exc:
            self._written = len(read_manifest(self.run_dir / L.MANIFEST)[0])
            err = self._fail(exc, finalising=True)
            logger.debug("%s", err)  # raised below: the caller reports it once
            self._error = self._error or err
            with contextlib.suppress(Exception):  # at least the status and count
                write_json(
                    self.run_dir / L.RUN_INFO,
                    {
                        **self._info,
                        **extra,
                        "status": "failed",
                        "pairs_written": self._written,
                        "writer_error": str(self._error),
                        "finalise_error": str(err),
                    },
                )
        finally:
            self._lock.release()
        if self._error is not None:
            self._error.pairs_written = self._written
            raise self._error
        return self._written

    def discard(self) -> None:
        """Stop and remove the run folder with all it holds: for a run derived from
        files that failed part-way (an import), whose inputs are intact."""
        with contextlib.suppress(Exception):
            self.close({"status": "failed"})
        import shutil

        shutil.rmtree(self.run_dir, ignore_errors=True)

    def discard_if_empty(self) -> bool:
        """Remove the run folder if no pair was written (a failed start); True if so.

        Only pairscope's own files are removed, and the folder only if then empty.
        """
        if read_manifest(self.run_dir / L.MANIFEST)[0]:
            return False
        self._closing.set()
        self._closed = True
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_STOP)
            self._thread.join(timeout=5)
        self._abort_files()
        if self._manifest is not None:
            with contextlib.suppress(OSError):
                self._manifest.close()
        for name in (L.RUN_INFO, L.MANIFEST, L.RESERVE, L.RUN_INFO + ".tmp"):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink()
        for path in self._storage.data_paths(self.run_dir):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        self._lock.release()
        try:
            self.run_dir.rmdir()
        except OSError:
            return False
        return True

    # -- writing thread --------------------------------------------------------
    def _loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.commit_interval_s
            # group commit: gather for one interval, at most half a queue (memory
            # stays bounded by the queue, not by the producer's rate)
            while batch[-1] is not _STOP and len(batch) < self._max_batch:
                try:
                    batch.append(
                        self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                    )
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            pairs = [item for item in batch if item is not _STOP]
            if not pairs:
                continue
            if self._error is not None:  # failed: drain, so no submit waits forever
                self._lost += len(pairs)
                continue
            try:
                self._write_batch(pairs)
            except BaseException as exc:  # fail safe on anything, not only OSError
                self._lost += len(pairs)
                self._error = self._fail(exc)
                if isinstance(exc, OSError):
                    logger.debug("%s", self._error)  # submit/close raise it
                else:
                    logger.error("%s", self._error, exc_info=exc)

    def _write_batch(self, pairs: list[Any]) -> None:
        self._check_folder()
        lines: list[str] = []
        try:
            self._frames_of(pairs, lines)
        except FrameRefused:  # list the pairs before the refused one, then stop
            if lines:
                self._commit(lines)
            raise
        self._commit(lines)

    def _frames_of(self, pairs: list[Any], lines: list[str]) -> None:
        for pair in pairs:
            meta = dict(pair.metadata or {})
            low_meta = meta.pop("lowdose", None)
            ref_meta = meta.pop("reference", None)
            low_info = ref_info = None
            if pair.lowdose is not None:
                low_info = dict(low_meta or {})
                low_info["page"] = self._files["lowdose"].write(
                    pair.lowdose, low_info.get("pixel_size_um")
                )
            if pair.reference is not None:
                ref_info = dict(ref_meta or {})
                ref_info["page"] = self._files["reference"].write(
                    pair.reference, ref_info.get("pixel_size_um")
                )
            if low_info is None and ref_info is None:
                raise ValueError(f"pair {pair.index} has neither frame")
            record = {
                "pair": self._written + len(lines),
                "trigger_index": pair.index,
                "lowdose": low_info,
                "reference": ref_info,
                **meta,
                "written_at": round(time.time(), 3),
            }
            lines.append(json.dumps(record, default=json_default) + "\n")

    def _commit(self, lines: list[str]) -> None:
        for f in self._files.values():
            f.sync()
        self._manifest.write("".join(lines))
        self._manifest.flush()
        os.fsync(self._manifest.fileno())
        self._written += len(lines)

    def _check_folder(self) -> None:
        """Open files outlive their folder: notice a removed or moved folder."""
        try:
            st = self.run_dir.stat()
            gone = (st.st_dev, st.st_ino) != self._dir_id
        except FileNotFoundError:
            gone = True
        if gone:
            raise FileNotFoundError(
                errno.ENOENT, "the run folder was removed or moved", str(self.run_dir)
            )

    def _reserve(self) -> None:
        """Hold some space that :meth:`close` frees for the metadata on a full disk."""
        if self.reserve_bytes <= 0:
            return
        path = self.run_dir / L.RESERVE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, self.reserve_bytes)
        except OSError:  # no room for it (or a file-size limit): go without
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(fd)

    def _unreserve(self) -> None:
        with contextlib.suppress(OSError):
            (self.run_dir / L.RESERVE).unlink()

    def _abort_files(self) -> None:
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.abort()

    def _fail(self, exc: BaseException, *, finalising: bool = False) -> WriterError:
        if isinstance(exc, WriterError):
            return exc
        if isinstance(exc, FrameRefused):
            return WriterError(
                f"{self.run_dir}: {exc}. The run was stopped; the {self._written} "
                f"pairs listed in {L.MANIFEST} are complete and readable.",
                pairs_written=self._written,
            )
        if isinstance(exc, OSError):
            reason = os_reason(exc)
        else:
            reason = f"an unexpected error ({type(exc).__name__}: {exc})"
        n = self._written
        if finalising:
            return WriterError(
                f"Finalising {self.run_dir} failed: {reason}. The {n} pairs listed in "
                f"{L.MANIFEST} are complete and readable; once the folder is "
                f"writable run 'pairscope repair {self.run_dir}'.",
                pairs_written=n,
            )
        return WriterError(
            f"Writing to {self.run_dir} failed: {reason}. The run was stopped; the "
            f"{n} pairs listed in {L.MANIFEST} are complete and readable. "
            "Free space or choose another --out folder, then start a new run.",
            pairs_written=n,
        )
