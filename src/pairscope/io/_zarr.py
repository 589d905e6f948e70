"""The OME-Zarr 0.5 format of a run: both detectors as arrays in one ``run.ome.zarr``.

``run.ome.zarr/lowdose/0`` and ``run.ome.zarr/reference/0`` are zarr v3 arrays
(t, y, x) with one chunk per frame, written through tensorstore (``file`` kvstore:
each chunk is written to a temporary file, fsynced and renamed, so a chunk is on
disk whole or not at all).  The writer waits for a batch's chunk writes before it
appends their manifest lines: the same manifest-first guarantee as the OME-TIFF
format.  While a run is written its arrays declare a large ``t`` extent; finalising
(:func:`finalize_zarr`, also from ``pairscope repair``) shrinks it to the listed
frames, removes unlisted chunks and writes the OME-Zarr ``multiscales`` (µm scale)
and, under ``pairscope``, each plane's pair index, DeltaT, exposure and stage
position.  An array holds one frame shape, so a camera whose frame size changes
mid-run is refused with a clear message (the OME-TIFF format starts a new image).
tensorstore is used directly rather than through ome-writers 0.3.2, whose
``OMEStream`` has no flush / durability call to order the manifest after the frames.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import _ome
from . import layout as L
from ._storage import FinalizeReport, FrameFile, FrameRefused, RunStorage

T_CAPACITY = 1 << 31  # declared t extent while writing (shrunk when finalised)


_OS_ERROR = re.compile(r"os_error_code='(\d+)'")
_FILE = re.compile(r'(?:writing|reading) local file "([^"]+)"')


def _result(future: Any) -> Any:
    """A tensorstore future's result; an OS failure it reports as ValueError (a
    full disk is ``RESOURCE_EXHAUSTED ... [os_error_code='28']``) is raised as the
    OSError it is, so the writer words it like every other full disk."""
    try:
        return future.result()
    except ValueError as exc:
        code = _OS_ERROR.search(str(exc))
        if code is None:
            raise
        errno_ = int(code.group(1))
        where = _FILE.search(str(exc))
        raise OSError(
            errno_, os.strerror(errno_), where.group(1) if where else None
        ) from exc


def _open(path: Path, *, create: dict[str, Any] | None = None) -> Any:
    import tensorstore as ts

    spec: dict[str, Any] = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path)},
    }
    if create is not None:
        spec.update(metadata=create, create=True)
    return _result(ts.open(spec))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from ._finalize import write_json

    write_json(path, data)


def _group(path: Path, attributes: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _write_json(
        path / "zarr.json",
        {"zarr_format": 3, "node_type": "group", "attributes": attributes},
    )


class ZarrFrames:
    """One detector's frames as ``run.ome.zarr/<role>/0`` (the ``PageFile`` API)."""

    def __init__(self, store: Path, role: str) -> None:
        self.store, self.role = store, role
        self.path = store / role
        self.pages = 0
        self.shape: tuple[int, int] | None = None
        self.dtype: np.dtype | None = None
        self._arr: Any = None
        self._pending: list[Any] = []

    def write(self, frame: np.ndarray, pixel_size_um: float | None) -> int:
        del pixel_size_um  # recorded in the manifest, written when finalised
        if frame.ndim != 2:
            raise FrameRefused(
                f"a frame of shape {frame.shape} reached the writer; pairscope "
                "writes 2-D (mono) frames"
            )
        if self._arr is None:
            self._create(frame)
        elif frame.shape != self.shape or frame.dtype != self.dtype:
            raise FrameRefused(
                f"the {self.role} camera's frames changed from {self.shape} "
                f"{self.dtype} to {frame.shape} {frame.dtype} mid-run; an OME-Zarr "
                "array holds one frame shape: start a new run for the new "
                "settings (or use the OME-TIFF format, which starts a new image)"
            )
        self._pending.append(self._arr[self.pages].write(frame))
        self.pages += 1
        return self.pages - 1

    def _create(self, frame: np.ndarray) -> None:
        if not (self.store / "zarr.json").is_file():
            _group(self.store, {"ome": {"version": "0.5"}, "pairscope": {"run": True}})
        _group(self.path, {"ome": {"version": "0.5"}})
        h, w = frame.shape
        self._arr = _open(
            self.path / "0",
            create={
                "shape": [T_CAPACITY, h, w],
                "chunk_grid": {
                    "name": "regular",
                    "configuration": {"chunk_shape": [1, h, w]},
                },
                "data_type": str(frame.dtype),
                "fill_value": 0,
                "dimension_names": ["t", "y", "x"],
            },
        )
        self.shape, self.dtype = (h, w), frame.dtype

    def sync(self) -> None:
        """Wait until every written frame is on disk (fsynced by tensorstore)."""
        pending, self._pending = self._pending, []
        for future in pending:
            _result(future)

    def close(self) -> None:
        self.sync()

    def abort(self) -> None:
        for future in self._pending:
            try:
                future.result()
            except Exception:  # never listed: what happened to it does not matter
                continue
        self._pending = []


def finalize_zarr(
    run_dir: Path, records: list[dict[str, Any]], info: dict[str, Any]
) -> tuple[dict[str, int], dict[str, int]]:
    """Shrink each array to its listed frames and write the OME-Zarr metadata.

    Returns ``(frames per role, chunks removed per role)``.
    """
    store = run_dir / L.ZARR_STORE
    frames: dict[str, int] = {}
    removed: dict[str, int] = {}
    images: dict[str, tuple[str, float | None]] = {}  # name, pixel size
    times = [
        t
        for r in records
        for role in L.ROLES
        if r.get(role) and (t := _ome.frame_time_ms(r[role])) is not None
    ]
    t0 = min(times) if times else 0.0
    for role in L.ROLES:
        listed = [r for r in records if r.get(role)]
        group = store / role
        if not listed:
            if group.exists():
                shutil.rmtree(group)
            continue
        pages = [int(r[role]["page"]) for r in listed]
        if pages != list(range(len(pages))):
            raise OSError(f"{group}: manifest pages are not 0..{len(pages) - 1}")
        arr = _open(group / "0")
        n = len(pages)
        if arr.shape[0] != n:
            _result(
                arr.resize(exclusive_max=[n, None, None], resize_metadata_only=True)
            )
        chunks = group / "0" / "c"
        extra = [
            p for p in (chunks.iterdir() if chunks.is_dir() else [])
            if p.name.isdigit() and int(p.name) >= n
        ]  # fmt: skip
        for p in extra:
            shutil.rmtree(p)
        removed[role] = len(extra)
        missing = [k for k in range(n) if not (chunks / str(k)).exists()]
        if missing:
            raise OSError(f"{group}: listed frames {missing[:5]} have no chunk on disk")
        frames[role] = n
        px = listed[0][role].get("pixel_size_um")
        planes = []
        for r in listed:
            t = _ome.frame_time_ms(r[role])
            planes.append(
                {
                    "pair": int(r.get("pair", 0)),
                    "trigger_index": r.get("trigger_index"),
                    "event_index": r.get("event_index"),
                    "delta_t_s": None if t is None else round((t - t0) / 1000, 6),
                    "exposure_ms": r[role].get("exposure_ms"),
                    "stage_xyz_um": r.get("stage_xyz_um"),
                }
            )
        camera = _ome.camera_name(listed[0][role], role)
        images[role] = (f"{role} {camera}", px)
        _group(
            group,
            {
                "ome": {"version": "0.5", "multiscales": [_multiscale(*images[role])]},
                "pairscope": {
                    "role": role,
                    "detector": camera,
                    "manifest": L.MANIFEST,
                    "acquisition_date": info.get("started"),
                    "planes": planes,
                },
            },
        )
    # the store's root lists both images too (paths into their groups), so a
    # reader opening the store (bioio: one scene per image) finds both detectors
    root_images = [
        _multiscale(name, px, f"{role}/0") for role, (name, px) in images.items()
    ]
    _group(
        store,
        {
            "ome": {"version": "0.5", "multiscales": root_images},
            "pairscope": {
                "images": list(frames),
                "status": info.get("status"),
                "manifest": L.MANIFEST,
            },
        },
    )
    return frames, removed


def _multiscale(name: str, px: float | None, path: str = "0") -> dict[str, Any]:
    """An OME-Zarr 0.5 ``multiscales`` entry: one level (the array at ``path``),
    (t, y, x), µm if known."""
    unit = {"unit": "micrometer"} if px else {}
    return {
        "name": name,
        "axes": [
            {"name": "t", "type": "time"},
            {"name": "y", "type": "space", **unit},
            {"name": "x", "type": "space", **unit},
        ],
        "datasets": [
            {
                "path": path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, px or 1.0, px or 1.0]}
                ],
            }
        ],
    }


def is_final(run_dir: Path, records: list[dict[str, Any]]) -> bool:
    """Each listed detector's array holds exactly its listed frames, and its
    group and the store's root carry the OME-Zarr image metadata."""
    store = run_dir / L.ZARR_STORE
    try:
        root = json.loads((store / "zarr.json").read_text())["attributes"]["ome"]
        for role in L.ROLES:
            n = sum(1 for r in records if r.get(role))
            if not n:
                continue
            meta = json.loads((store / role / "zarr.json").read_text())
            shape = json.loads((store / role / "0" / "zarr.json").read_text())["shape"]
            if "multiscales" not in meta["attributes"]["ome"] or shape[0] != n:
                return False
            if not any(
                d.get("path") == f"{role}/0"
                for m in root.get("multiscales", [])
                for d in m.get("datasets", [])
            ):
                return False  # written before the root listed its images
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


class OmeZarrStorage(RunStorage):
    """OME-Zarr runs (``--format ome-zarr``, needs the ``zarr`` extra to write)."""

    name = "ome-zarr"

    def data_paths(self, run_dir: Path) -> list[Path]:
        return [run_dir / L.ZARR_STORE]

    def check_available(self) -> None:
        try:
            import tensorstore  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "--format ome-zarr needs tensorstore: pip install "
                "'pairscope[zarr]' (or use the default ome-tiff)"
            ) from exc

    def open_frames(self, run_dir: Path, role: str) -> FrameFile:
        return ZarrFrames(run_dir / L.ZARR_STORE, role)

    def read_frame(
        self, run_dir: Path, role: str, page: int, cache: dict[str, Any]
    ) -> np.ndarray:
        if role not in cache:
            cache[role] = _open(run_dir / L.ZARR_STORE / role / "0")
        return np.asarray(_result(cache[role][page].read()))

    def finalize(
        self,
        run_dir: Path,
        records: list[dict[str, Any]],
        info: dict[str, Any],
        report: FinalizeReport,
    ) -> None:
        report.frames, report.unlisted_pages_removed = finalize_zarr(
            run_dir, records, info
        )
        report.images = dict.fromkeys(report.frames, 1)

    def is_final(self, run_dir: Path, records: list[dict[str, Any]]) -> bool:
        return is_final(run_dir, records)
