"""The OME-TIFF format of a run: one BigTIFF per detector, a page per frame.

``lowdose.ome.tif`` and ``reference.ome.tif`` grow a page per frame while the run
is written (:class:`PageFile`, staged and committed in a few syscalls); finalising
cuts pages no manifest line lists and writes each file's OME-XML, which names both
files (a camera whose frame size changes mid-run starts a new image).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import tifffile

from ..errors import DamagedRunError
from . import _ome
from . import layout as L
from ._storage import FinalizeReport, FrameFile, FrameRefused, RunStorage

logger = logging.getLogger(__name__)


class _StagedFile(io.RawIOBase):
    """A new file whose writes are staged in memory and committed in a few syscalls.

    tifffile seeks and writes a dozen times per page; every such call releases and
    re-takes the GIL, and against a CPU-bound acquisition thread each re-take waits
    for Python's switch interval (the "convoy effect"), which slowed acquisition by
    5-10 %.  Staged, a commit is one ``pwrite`` of the new bytes, ``pwrite`` patches
    of earlier bytes (the previous page's next-IFD offset) and one ``fsync``.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._disk = 0  # bytes committed
        self._tail = bytearray()  # staged bytes from offset self._disk on
        self._patches: list[tuple[int, bytes]] = []  # staged bytes below self._disk
        self._pos = 0
        self._committed = 0  # file size at the last commit
        self._unsynced = False  # frame bytes written directly, not yet fsynced

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos}.get(whence)
        if base is None:  # SEEK_END
            base = self._disk + len(self._tail)
        self._pos = base + offset
        return self._pos

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        end = self._disk + len(self._tail)
        if n >= _DIRECT_BYTES and self._pos >= end:
            # a frame's pixels, appended: new bytes nothing links to yet, so they
            # may go to the file now (no copy); commit fsyncs before any patch
            self._tail.extend(bytes(self._pos - end))
            _pwrite_all(self._fd, self._tail, self._disk)
            _pwrite_all(self._fd, view, self._disk + len(self._tail))
            self._disk += len(self._tail) + n
            self._tail = bytearray()
            self._pos += n
            self._unsynced = True
            return n
        below = max(0, min(n, self._disk - self._pos))  # part over committed bytes
        if below:
            self._patches.append((self._pos, bytes(view[:below])))
        i = self._pos + below - self._disk
        if i > len(self._tail):
            self._tail.extend(bytes(i - len(self._tail)))
        self._tail[i : i + n - below] = view[below:]
        self._pos += n
        return n

    def commit(self) -> None:
        """New bytes first, then the patches that link to them: a failure midway
        leaves the committed file intact (no pointer into missing bytes)."""
        if self._tail or self._unsynced:
            _pwrite_all(self._fd, self._tail, self._disk)
            os.fsync(self._fd)
            self._disk += len(self._tail)
            self._tail = bytearray()
            self._unsynced = False
        for offset, patch in self._patches:
            _pwrite_all(self._fd, patch, offset)
        self._patches.clear()
        os.fsync(self._fd)
        self._committed = self._disk

    def abort(self) -> None:
        """Drop what is staged (never committed, never listed) and close."""
        if not self.closed:
            self._tail = bytearray()
            self._patches.clear()
            with contextlib.suppress(OSError):  # uncommitted bytes: give space back
                os.ftruncate(self._fd, self._committed)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            super().close()

    def close(self) -> None:
        """Commit what is staged and close; if that fails the staged bytes are lost
        (the manifest never listed them) and the error is raised."""
        if not self.closed:
            try:
                self.commit()
            finally:
                self._tail = bytearray()  # a new one: a failed write may hold a view
                self._patches.clear()
                os.close(self._fd)
                super().close()


_DIRECT_BYTES = 1 << 20  # writes this large skip the in-memory staging


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class PageFile:
    """A BigTIFF that grows one page per frame."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _StagedFile(path)
        # a binary file object to tifffile (io.RawIOBase is not typing.IO[bytes])
        self._tif = tifffile.TiffWriter(cast(IO[bytes], self._file), bigtiff=True)
        self.pages = 0
        self.shape: tuple[int, int] | None = None
        self.dtype: np.dtype | None = None
        self.pixel_size_um: float | None = None

    def write(self, frame: np.ndarray, pixel_size_um: float | None) -> int:
        if frame.ndim != 2:
            raise FrameRefused(
                f"a frame of shape {frame.shape} reached the writer; pairscope "
                "writes 2-D (mono) frames"
            )
        kwargs: dict[str, Any] = {}
        if pixel_size_um:
            kwargs = {
                "resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um),
                "resolutionunit": "CENTIMETER",
            }
            self.pixel_size_um = pixel_size_um
        self._tif.write(
            frame,
            photometric="minisblack",
            description=L.IN_PROGRESS_DESCRIPTION if self.pages == 0 else None,
            metadata=None,
            contiguous=False,
            **kwargs,
        )
        self.shape = self.shape or (int(frame.shape[0]), int(frame.shape[1]))
        self.dtype = self.dtype or frame.dtype
        self.pages += 1
        return self.pages - 1

    def sync(self) -> None:
        self._tif.filehandle.flush()
        self._file.commit()

    def close(self) -> None:
        try:
            self._tif.close()
        finally:
            self._file.close()

    def abort(self) -> None:
        """Close without committing: the file stays as its last commit left it."""
        self._file.abort()


class OmeTiffStorage(RunStorage):
    """OME-TIFF runs (the default format)."""

    name = "ome-tiff"

    def data_paths(self, run_dir: Path) -> list[Path]:
        return [run_dir / L.TIFF_OF_ROLE[role] for role in L.ROLES]

    def open_frames(self, run_dir: Path, role: str) -> FrameFile:
        return PageFile(run_dir / L.TIFF_OF_ROLE[role])

    def read_frame(
        self, run_dir: Path, role: str, page: int, cache: dict[str, Any]
    ) -> np.ndarray:
        if role not in cache:
            cache[role] = tifffile.TiffFile(run_dir / L.TIFF_OF_ROLE[role])
        return np.asarray(cache[role].pages[page].asarray())

    def close_cache(self, cache: dict[str, Any]) -> None:
        for tif in cache.values():
            tif.close()
        cache.clear()

    def finalize(
        self,
        run_dir: Path,
        records: list[dict[str, Any]],
        info: dict[str, Any],
        report: FinalizeReport,
    ) -> None:
        run_id = str(info.get("run_id") or run_dir.name)
        images: list[_ome.ImageSpec] = []
        files: dict[str, tuple[str, str]] = {}
        labels = {
            role: f"{role} {(info.get('detectors') or {}).get(role) or ''}".strip()
            for role in L.ROLES
        }
        pages_of = {
            role: sorted(r[role]["page"] for r in records if r.get(role))
            for role in L.ROLES
        }
        layouts = {
            role: _layout_or_empty(run_dir / L.TIFF_OF_ROLE[role]) for role in L.ROLES
        }
        for role in L.ROLES:  # every file checked before any is changed
            if len(layouts[role]) < len(pages_of[role]):
                raise _cut_short(run_dir / L.TIFF_OF_ROLE[role], len(layouts[role]),
                                 len(pages_of[role]))  # fmt: skip
        for role in L.ROLES:
            name = L.TIFF_OF_ROLE[role]
            path = run_dir / name
            pages, layout = pages_of[role], layouts[role]
            if not pages:
                if path.is_file():  # nothing in it is listed: not part of the run
                    path.unlink()
                    report.files_removed.append(name)
                continue
            if pages != list(range(len(pages))):
                logger.warning(
                    "%s: manifest pages are not 0..n-1; kept as listed", path
                )
            elif len(layout) > len(pages):
                report.unlisted_pages_removed[role] = trim_pages(path, len(pages))
                layout = layout[: len(pages)]
            planes = _ome.planes_of(records, role, layout)
            if len(planes) != len(pages):
                raise _cut_short(path, len(planes), len(pages))
            report.frames[role] = len(planes)
            imgs = _ome.group_images(role, planes, labels[role])
            report.images[role] = len(imgs)
            images += imgs
            files[role] = (name, _ome.file_uuid(run_id, name))
        for role, (name, urn) in files.items():
            # the file's own images first: viewers open series 0 of the file they open
            own = [im for im in images if im.role == role]
            xml = _ome.build_ome_xml(
                own + [im for im in images if im.role != role],
                files=files,
                root_uuid=urn,
                info=info,
                description={
                    r: f"pairscope {r} detector; pairs listed in {L.MANIFEST}"
                    for r in files
                },
            )
            try:
                _ome.write_ome(run_dir / name, xml)
            except OSError as exc:  # the data stays readable; repair can add it later
                logger.warning("Could not write the OME-XML of %s: %s", name, exc)
                report.ome_errors[name] = exc.strerror or str(exc)

    def is_final(self, run_dir: Path, records: list[dict[str, Any]]) -> bool:
        for role in L.ROLES:
            pages = [r[role]["page"] for r in records if r.get(role)]
            if not pages:
                continue
            try:
                with tifffile.TiffFile(run_dir / L.TIFF_OF_ROLE[role]) as tif:
                    if not tif.is_ome or len(tif.pages) != len(pages):
                        return False
            except Exception:
                return False
        return True


def _page_end(page: Any, bigtiff: bool) -> tuple[int, int]:
    """``(offset of the next-IFD pointer, end of the page's bytes)``."""
    entry, count_size = (20, 8) if bigtiff else (12, 2)
    n = len(page.tags)
    next_ptr = page.offset + count_size + entry * n
    end = next_ptr + (8 if bigtiff else 4)
    for tag in page.tags.values():
        end = max(end, tag.valueoffset + tag.valuebytecount)
    for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=False):
        end = max(end, off + cnt)
    return next_ptr, end


def trim_pages(path: Path, keep: int) -> int:
    """Unlink and cut off every page after the first ``keep``; returns pages removed."""
    with tifffile.TiffFile(path) as tif:
        total = len(tif.pages)
        if total <= keep:
            return 0
        bigtiff = tif.is_bigtiff
        byteorder = tif.byteorder
        next_ptr, _ = _page_end(tif.pages[keep - 1], bigtiff)
        # kept pages' bytes (page 0's OME-XML may sit after later pages)
        end = max(_page_end(tif.pages[i], bigtiff)[1] for i in range(keep))
    fd = os.open(path, os.O_RDWR)
    try:
        fmt = byteorder + ("Q" if bigtiff else "I")
        os.pwrite(fd, struct.pack(fmt, 0), next_ptr)
        os.fsync(fd)
        os.ftruncate(fd, end)
        os.fsync(fd)
    finally:
        os.close(fd)
    return total - keep


def _layout_or_empty(path: Path) -> list[tuple[tuple[int, int], str]]:
    if not path.is_file():
        return []
    try:
        return _ome.page_layout(path)
    except Exception as exc:  # a TIFF with no complete page
        logger.debug("%s has no readable pages: %s", path, exc)
        return []


def _cut_short(path: Path, held: int, listed: int) -> DamagedRunError:
    return DamagedRunError(
        f"{path} holds {held} complete frame(s) but {L.MANIFEST} lists {listed}: the "
        "file was cut short (an incomplete copy or a disk fault). Nothing was "
        f"changed; copy {path.name} again from where the run was written, then "
        "repeat"
    )
