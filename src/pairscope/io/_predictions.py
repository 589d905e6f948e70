"""Restored frames: their own OME-TIFF, marked as predictions, never mixed with data.

Predictions go to ``restored.prediction.ome.tif`` with an index ``restored.jsonl``
naming, for every page, the pair it restores (``pair``: the manifest's pair index;
``trigger_index``) and the SHA-256 of the model file that predicted it.  Its OME-XML
(:func:`finalize_predictions`) follows the low-dose data's axes (so the T index of
a restored plane is the low-dose one), has the reference grid's pixel size and
maps every plane to its pair.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import _ome
from . import layout as L
from ._finalize import read_info, read_manifest
from ._tiff import PageFile

logger = logging.getLogger(__name__)
PREDICTION_INDEX = L.PREDICTION_INDEX
_STOP = object()


def _listed(
    folder: Path, run_dir: Path, index_name: str
) -> tuple[list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]], dict[str, Any]]:
    """``[(index item, its pair's record, the restored frame's metadata)]`` for
    every restored frame whose pair the run lists, and the run's info."""
    index, _, _ = read_manifest(folder / index_name)
    records, _, _ = read_manifest(run_dir / L.MANIFEST)
    info = read_info(run_dir)
    by_pair = {int(r.get("pair", i)): r for i, r in enumerate(records)}
    by_trigger = {int(r["trigger_index"]): r for r in records if "trigger_index" in r}
    out = []
    for item in index:
        rec = (
            by_pair.get(int(item["pair"]))
            if "trigger_index" in item
            else by_trigger.get(int(item["pair"]))  # live files: pair = trigger
        )
        if rec is None or not rec.get("lowdose"):
            continue
        low = dict(rec["lowdose"])
        factor = int(
            item.get("factor") or (info.get("detectors") or {}).get("factor") or 1
        )
        px = (rec.get("reference") or {}).get("pixel_size_um")
        if px is None and low.get("pixel_size_um"):
            px = low["pixel_size_um"] / factor
        frame = {**low, "camera": "restored", "label": None, "binning": None}
        out.append((item, rec, {**frame, "pixel_size_um": px}))
    return out, info


def finalize_predictions(
    folder: str | Path,
    run_dir: str | Path | None = None,
    *,
    model_sha256: str | None = None,
    tiff_name: str = L.PREDICTION_TIFF,
    index_name: str = L.PREDICTION_INDEX,
    uncertainty_name: str = L.UNCERTAINTY_TIFF,
) -> int:
    """Write the OME-XML of ``folder``'s restored file (planes of listed pairs),
    and of its interval file where there is one (:func:`_finalize_uncertainty`).

    ``run_dir``: the run the predictions belong to (default: ``folder``);
    ``tiff_name``, ``index_name``: the files as written (the XML names the file
    :data:`~pairscope.io.layout.PREDICTION_TIFF` they become).  Returns the
    number of planes described.
    """
    folder = Path(folder)
    run_dir = Path(run_dir or folder)
    tiff = folder / tiff_name
    listed, info = _listed(folder, run_dir, index_name)
    merged = [
        {**rec, "restored": {**frame, "page": int(item["page"])}}
        for item, rec, frame in listed
    ]
    if not merged or not tiff.is_file():
        return 0
    layout = _ome.page_layout(tiff)
    planes = _ome.planes_of(merged, "restored", layout)
    index = [item for item, _, _ in listed]
    sha = model_sha256 or next((i.get("model_sha256") for i in index), None) or "?"
    images = _ome.group_images(
        "restored",
        planes,
        f"restored (prediction, not measured data; model sha256 {sha})",
    )
    urn = _ome.file_uuid(str(info.get("run_id") or run_dir.name), L.PREDICTION_TIFF)
    xml = _ome.build_ome_xml(
        images,
        files={"restored": (L.PREDICTION_TIFF, urn)},
        root_uuid=urn,
        info={**info, "status": "prediction"},
        description={
            "restored": "prediction by a restoration model, not measured data; "
            f"model sha256 {sha}; pairs listed in {L.PREDICTION_INDEX}"
        },
    )
    _ome.write_ome(tiff, xml)
    if (folder / uncertainty_name).is_file():
        _finalize_uncertainty(folder / uncertainty_name, run_dir, listed, info, sha)
    return len(planes)


def _finalize_uncertainty(
    tiff: Path,
    run_dir: Path,
    listed: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]],
    info: dict[str, Any],
    sha: str,
) -> int:
    """The OME-XML of ``restored.uncertainty.ome.tif`` (``tiff``: the file as
    written): per restored frame two channels, the interval's lower and upper
    bound (derived data, with α); ``listed``, ``info`` as :func:`_listed` gives."""
    merged = []
    alphas = set()
    for item, rec, frame in listed:
        pages = item.get("uncertainty_pages")
        if not pages:
            continue
        alphas.add(item.get("alpha"))
        ev = dict(rec.get("event_index") or {"t": rec.get("trigger_index", 0)})
        for c, page in enumerate(pages):
            interval = {**frame, "page": int(page), "camera": "restored interval"}
            merged.append({**rec, "event_index": {**ev, "c": c}, "interval": interval})
    if not merged:
        return 0
    planes = _ome.planes_of(merged, "interval", _ome.page_layout(tiff))
    alpha = ", ".join(f"{a:g}" for a in sorted(a for a in alphas if a is not None))
    what = (
        f"per-pixel interval of the restored frame at risk level alpha={alpha} "
        "(derived, not measured data: conformal, calibrated on the run's "
        "same-instant references); channel 0 lower, channel 1 upper bound; "
        f"model sha256 {sha}; pairs listed in {L.PREDICTION_INDEX}"
    )
    images = _ome.group_images("interval", planes, f"restored interval (alpha {alpha})")
    urn = _ome.file_uuid(str(info.get("run_id") or run_dir.name), L.UNCERTAINTY_TIFF)
    seq = {**(info.get("sequence") or {}), "channels": ["lower", "upper"]}
    xml = _ome.build_ome_xml(
        images,
        files={"interval": (L.UNCERTAINTY_TIFF, urn)},
        root_uuid=urn,
        info={**info, "status": "prediction", "sequence": seq},
        description={"interval": what},
    )
    _ome.write_ome(tiff, xml)
    return len(planes)


def write_bounds(pages: PageFile, interval: Any) -> dict[str, Any]:
    """Append an interval's lower and upper bound (float32 pages) to ``pages``;
    returns the index line's fields that name them (sync before writing it)."""
    lo = pages.write(np.asarray(interval.lower, np.float32), None)
    hi = pages.write(np.asarray(interval.upper, np.float32), None)
    return {"uncertainty_pages": [lo, hi], "alpha": interval.alpha}


class PredictionWriter:
    """Append restored frames (float32) on a thread; never blocks the restorer."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        max_queue: int = 8,
        intervals: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self._file = PageFile(self.run_dir / L.PREDICTION_TIFF)
        #: ``intervals(restored)``: the frame's calibrated interval (``lower``,
        #: ``upper``, ``alpha``) or None; its bounds go to the uncertainty file
        self._intervals = intervals
        self._bounds: PageFile | None = None
        self._index = open(self.run_dir / PREDICTION_INDEX, "a", encoding="utf-8")  # noqa: SIM115
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(
            target=self._loop, name="pairscope-predictions", daemon=True
        )
        self._thread.start()

    def on_restored(self, frame: Any) -> None:
        """Slot for ``StreamingRestorer.events.restored``; drops when the disk lags."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    def close(self) -> int:
        self._queue.put(_STOP)
        self._thread.join()
        for f in (self._file, self._bounds):
            if f is None:
                continue
            try:
                f.close()
            except OSError:
                logger.error("Could not save the last restored frames (disk full?)")
                f.abort()
        with contextlib.suppress(OSError):
            self._index.close()
        try:
            finalize_predictions(self.run_dir)
        except OSError as exc:
            logger.warning("Could not write OME-XML into %s: %s", self._file.path, exc)
        except Exception:
            logger.exception("Could not write OME-XML into %s", self._file.path)
        return self.written

    def _write_interval(self, image: np.ndarray) -> dict[str, Any]:
        """The frame's interval bounds as two pages (lower, upper), made durable
        before the index line names them; {} before the calibration."""
        if self._intervals is None:
            return {}
        try:
            interval = self._intervals(image)
        except Exception:  # the prediction is kept without its interval
            logger.debug("no interval for a restored frame", exc_info=True)
            return {}
        if interval is None:
            return {}
        if self._bounds is None:
            self._bounds = PageFile(self.run_dir / L.UNCERTAINTY_TIFF)
        record = write_bounds(self._bounds, interval)
        self._bounds.sync()
        return record

    def _loop(self) -> None:
        while (frame := self._queue.get()) is not _STOP:
            try:
                image = np.asarray(frame.image, np.float32)
                page = self._file.write(image, None)
                self._file.sync()
                record = {
                    "page": page,
                    "pair": frame.index,
                    "prediction": True,
                    "model_name": frame.model_name,
                    "model_sha256": frame.model_sha256,
                    "latency_ms": round(frame.latency_ms, 3),
                    **self._write_interval(image),
                }
                self._index.write(json.dumps(record) + "\n")
                self._index.flush()
                os.fsync(self._index.fileno())
                self.written += 1
            except OSError as exc:  # disk full: say it once, not per frame
                if not self.dropped:
                    logger.warning(
                        "Could not save restored frames (%s); measured data unaffected",
                        exc.strerror or exc,
                    )
                self.dropped += 1
            except Exception:
                logger.exception(
                    "Could not save a restored frame (measured data unaffected)"
                )
                self.dropped += 1
