"""How a run folder stores its frames: one interface, one implementation per format.

Everything that touches a run's image data goes through a :class:`RunStorage`: the
writer (:meth:`RunStorage.open_frames`), the reader (:meth:`RunStorage.read_frame`),
finalising and ``pairscope repair`` (:meth:`RunStorage.finalize`,
:meth:`RunStorage.is_final`), snapshots for fine-tuning and the clean-up of a
failed start (:meth:`RunStorage.data_paths`).  The manifest, ``run.json`` and
``calibration.json`` are the same in every format.  A feature written against this
interface works on OME-TIFF (:mod:`pairscope.io._tiff`) and OME-Zarr
(:mod:`pairscope.io._zarr`) runs alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from . import layout as L


class FrameRefused(ValueError):
    """A frame the format cannot hold, refused before any of its bytes were written."""


class FrameFile(Protocol):
    """One detector's frames being written: append, make durable, close."""

    pages: int

    def write(self, frame: np.ndarray, pixel_size_um: float | None) -> int:
        """Append ``frame``; returns its page (frame index)."""
        ...

    def sync(self) -> None:
        """Every frame written so far is on disk when this returns."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Close without making the unsynced frames durable (never listed)."""
        ...


@dataclass(slots=True)
class FinalizeReport:
    """What finalising found and did."""

    pairs: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    unlisted_pages_removed: dict[str, int] = field(default_factory=dict)
    damaged_lines_removed: int = 0
    files_removed: list[str] = field(default_factory=list)
    ome_errors: dict[str, str] = field(default_factory=dict)


class RunStorage:
    """A run format: where the frames live and how they are written, read and
    finalised (the manifest decides which frames exist, in every format)."""

    name: ClassVar[str]

    def data_paths(self, run_dir: Path) -> list[Path]:
        """The files and folders of ``run_dir`` that hold frames (may not exist)."""
        raise NotImplementedError

    def check_available(self) -> None:
        """Raise ``ValueError`` naming the missing extra if the format cannot be
        written here."""

    def open_frames(self, run_dir: Path, role: str) -> FrameFile:
        raise NotImplementedError

    def read_frame(
        self, run_dir: Path, role: str, page: int, cache: dict[str, Any]
    ) -> np.ndarray:
        """Frame ``page`` of ``role``; ``cache`` holds open handles between calls
        (:meth:`close_cache` closes them)."""
        raise NotImplementedError

    def close_cache(self, cache: dict[str, Any]) -> None:
        cache.clear()

    def finalize(
        self,
        run_dir: Path,
        records: list[dict[str, Any]],
        info: dict[str, Any],
        report: FinalizeReport,
    ) -> None:
        """Cut what the manifest does not list and write the format's OME metadata;
        fills ``report``'s frames, images, removals and metadata errors."""
        raise NotImplementedError

    def is_final(self, run_dir: Path, records: list[dict[str, Any]]) -> bool:
        """Whether the frames on disk are exactly the listed ones, with metadata."""
        raise NotImplementedError


def storage_named(name: str) -> RunStorage:
    """The storage of format ``name`` (``ome-tiff`` or ``ome-zarr``)."""
    if name == "ome-zarr":
        from ._zarr import OmeZarrStorage

        return OmeZarrStorage()
    if name == "ome-tiff":
        from ._tiff import OmeTiffStorage

        return OmeTiffStorage()
    raise ValueError(
        f"unknown run format {name!r}; choose one of {', '.join(L.FORMATS)}"
    )


def storage_of(run_dir: Path, info: dict[str, Any] | None = None) -> RunStorage:
    """The storage a run folder was written in (``run.json``'s ``format``, else
    what is on disk; runs older than the format key are OME-TIFF)."""
    fmt = (info or {}).get("format")
    if fmt not in L.FORMATS:
        fmt = "ome-zarr" if (run_dir / L.ZARR_STORE).is_dir() else "ome-tiff"
    return storage_named(str(fmt))
