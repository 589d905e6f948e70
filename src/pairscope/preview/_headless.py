"""A preview sink without a screen: PNG snapshots and a JSON-lines status log."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pairscope.acquire import Pair

from .._files import os_reason
from .._threads import deprioritize_current_thread, restore_priority
from ._contrast import PanelImage, panels_for
from ._render_process import SnapshotRenderer
from ._snapshot import SnapshotSpec, TrustPanel, draw_snapshot
from ._status import LatestFrames, PreviewStatus, RestoredLike
from ._trust import TrustView, error_overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["HeadlessPreview"]

logger = logging.getLogger(__name__)

_MAX_PENDING_SNAPSHOTS = 2  # more waiting snapshots are skipped (and logged)
_STOP = object()


class HeadlessPreview:
    """Write ``preview_NNNNNN.png`` every ``snapshot_every`` pairs (and no more often
    than every ``min_interval_s`` seconds: a fast timelapse gets fewer) and a stats log.

    Each snapshot is a 1×4 panel figure (low-dose upsampled, restored, reference,
    restored − reference), named by the number of pairs received so far; every
    image panel has a colour bar of its display range (ADU; the difference's
    signed, blue-white-red) and a scale bar in µm.  The pixel size is
    :attr:`pixel_size_um` if set, else the pair's reference (or low-dose / factor)
    pixel size; without one there is no scale bar.  Once the trust monitor
    reports (:meth:`on_quality`), a fifth panel shows its error map over the
    restored frame and a strip below its local error over time.  Every
    :meth:`on_status` appends one JSON line (status fields, newest pair index and
    time) to ``preview_stats.jsonl``.  Snapshots are prepared on a worker thread
    and drawn in a child process (:class:`~._render_process.SnapshotRenderer`);
    the sink methods only store and enqueue, and never raise.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        snapshot_every: int = 25,
        min_interval_s: float = 0.0,
        method: Literal["nearest", "bilinear"] = "nearest",
        dpi: int = 100,
    ) -> None:
        #: maps the reference onto the low-dose camera frame (set by the live session)
        self.reference_transform: Any = None
        #: µm per displayed pixel (the reference grid); None: from each pair
        self.pixel_size_um: float | None = None
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_every = snapshot_every
        self.min_interval_s = min_interval_s
        self._last_snapshot_at = -math.inf
        self.method: Literal["nearest", "bilinear"] = method
        self.dpi = dpi
        self.stats_path = self.out_dir / "preview_stats.jsonl"
        self.pairs_received = 0
        self.snapshots_skipped = 0
        self.last_error = ""
        #: why snapshots stopped being written ("" while they are)
        self.write_error = ""
        self._status = PreviewStatus()
        self._latest = LatestFrames()
        self.trust = TrustView()
        self._written: list[Path] = []
        self._last_snapshot_count = -1
        self._pending = 0
        self._closed = False
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: draws snapshots in a child process (matplotlib would hold the interpreter
        #: lock the acquisition's threads wait for)
        self._renderer = SnapshotRenderer()
        self._renderer.start()  # its start-up now, before the run's pairs flow
        self._thread = threading.Thread(
            target=self._work, name="pairscope-preview", daemon=True
        )
        self._thread.start()

    # -- sink protocol (any thread; quick; never raises) ----------------------------
    def on_pair(self, pair: Pair) -> None:
        try:
            self._latest.put_pair(pair)
            with self._lock:
                self.pairs_received += 1
                count = self.pairs_received
            due = time.monotonic() - self._last_snapshot_at >= self.min_interval_s
            if count % self.snapshot_every == 0 and due:
                self._request_snapshot(count, pair)
        except Exception:
            logger.exception("headless preview: on_pair failed")

    def on_restored(self, frame: RestoredLike) -> None:
        try:
            self._latest.put_restored(frame)
        except Exception:
            logger.exception("headless preview: on_restored failed")

    def on_status(self, status: PreviewStatus) -> None:
        try:
            self._status = status
            pair, _, _ = self._latest.latest()
            record = {
                "time": time.time(),
                "pair_index": None if pair is None else pair.index,
                **status.as_dict(),
            }
            self._jobs.put(("status", record))
        except Exception:
            logger.exception("headless preview: on_status failed")

    def on_error(self, message: str) -> None:
        self.last_error = str(message)

    def on_quality(self, result: Any) -> None:
        """A trust monitor's check (:class:`pairscope.trust.CheckResult`)."""
        try:
            self.trust.put(result)
        except Exception:
            logger.exception("headless preview: on_quality failed")

    def close(self) -> list[Path]:
        """Write a final snapshot, flush the log, stop the worker; paths written."""
        with self._lock:
            if self._closed:
                return list(self._written)
            self._closed = True
            count = self.pairs_received
        pair, _, _ = self._latest.latest()
        if pair is not None and count != self._last_snapshot_count:
            self._jobs.put(("snapshot", count, pair))
        self._jobs.put(_STOP)
        restore_priority(self._thread)  # the run is over: the last snapshot now
        self._renderer.restore_priority()
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            logger.warning("headless preview: worker did not finish within 60 s")
        self._renderer.close()
        return list(self._written)

    def __enter__(self) -> HeadlessPreview:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker ------------------------------------------------------------------
    def _request_snapshot(self, count: int, pair: Pair) -> None:
        with self._lock:
            if self._closed or self.write_error:
                return
            if self._pending >= _MAX_PENDING_SNAPSHOTS:
                self.snapshots_skipped += 1
                logger.warning("headless preview: snapshot at pair %d skipped", count)
                return
            self._pending += 1
            self._last_snapshot_count = count
            self._last_snapshot_at = time.monotonic()
        self._jobs.put(("snapshot", count, pair))

    def _work(self) -> None:
        deprioritize_current_thread()
        log = None
        try:
            log = self.stats_path.open("a", encoding="utf-8")
        except OSError as exc:
            self._cannot_write(exc)
        while (job := self._jobs.get()) is not _STOP:
            try:
                if self.write_error:
                    continue  # said once; the run itself goes on
                if job[0] == "status" and log is not None:
                    log.write(json.dumps(job[1]) + "\n")
                    log.flush()
                else:
                    self._snapshot(job[1], job[2])
            except OSError as exc:  # the folder turned read-only, full or removed
                self._cannot_write(exc)
            except Exception:
                logger.exception("headless preview: %s failed", job[0])
            finally:
                if job[0] == "snapshot":
                    with self._lock:
                        self._pending = max(0, self._pending - 1)
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()
            if self.stats_path not in self._written:
                self._written.append(self.stats_path)

    def _cannot_write(self, exc: OSError) -> None:
        """Say once why the preview stops writing; the run itself goes on."""
        self.write_error = f"{exc.filename or self.out_dir}: {os_reason(exc)}"
        logger.warning(
            "headless preview: cannot write %s; no more snapshots (the run's pairs "
            "are written as before)",
            self.write_error,
        )

    def _snapshot(self, count: int, pair: Pair) -> None:
        path = self.out_dir / f"preview_{count:06d}.png"
        self._renderer.render(self.snapshot_spec(count, pair), path)
        self._written.append(path)

    def snapshot_figure(self, count: int, pair: Pair) -> Figure:
        """The figure of the snapshot after ``count`` pairs, newest ``pair``."""
        return draw_snapshot(self.snapshot_spec(count, pair))

    def snapshot_spec(self, count: int, pair: Pair) -> SnapshotSpec:
        """What the snapshot after ``count`` pairs shows (newest ``pair``)."""
        matched, frame, _ = self._latest.latest()
        pair = matched or pair
        panels = panels_for(
            pair,
            frame,
            method=self.method,
            reference_transform=self.reference_transform,
        )
        trust = self._trust_panel(panels[1]) if self.trust.lines() else None
        title = f"pair {pair.index}"
        if frame is not None:
            title += (
                f" · restored pair {frame.index} by {frame.model_name}"
                f" ({frame.latency_ms:.0f} ms)"
            )
        status = self._status
        if self.last_error and not status.error:
            status = status.replace(error=self.last_error)
        if status.pairs < count:
            status = status.replace(pairs=count)
        return SnapshotSpec(
            panels,
            self.pixel_size_um or _pixel_size_um(pair),
            f"{title}\n{status.line()}",
            trust,
            self.dpi,
        )

    def _trust_panel(self, restored: PanelImage) -> TrustPanel:
        """The trust monitor's map over the restored panel, and its strip."""
        m = self.trust.error_map()
        if m is None or restored.pixels is None:
            return self._with_strip(TrustPanel("Trust error map", None, restored.shape))
        index, emap, level = m
        title = f"Trust error map (pair {index})\nred: local error > {level:g}× noise"
        outside = self.trust.outside_map()
        if outside is not None:  # the calibrated interval says more: show it
            index, emap, alpha = outside
            level = 0.5
            title = (
                f"Trust interval (pair {index})\nred: outside the alpha={alpha:g} "
                "interval"
            )
        overlay = error_overlay(restored.pixels, emap, level)
        return self._with_strip(TrustPanel(title, overlay, restored.shape))

    def _with_strip(self, panel: TrustPanel) -> TrustPanel:
        panel.strip = self.trust.lines()
        panel.level = _trust_level_of(self.trust)
        panel.text = self.trust.text()
        return panel


def _trust_level_of(view: TrustView) -> float | None:
    m = view.error_map()
    return None if m is None else m[2]


def _pixel_size_um(pair: Pair) -> float | None:
    """µm per pixel of the reference grid the panels are shown on, if recorded."""
    meta = pair.metadata
    ref = (meta.get("reference") or {}).get("pixel_size_um")
    if ref:
        return float(ref)
    low = (meta.get("lowdose") or {}).get("pixel_size_um")
    return float(low) / max(pair.factor, 1) if low else None
