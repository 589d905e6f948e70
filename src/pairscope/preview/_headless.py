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

import numpy as np

from pairscope.acquire import Pair

from .._files import os_reason
from .._threads import deprioritize_current_thread, restore_priority
from ._contrast import PanelImage, diverging_lut, nice_length_um, panels_for
from ._status import LatestFrames, PreviewStatus, RestoredLike
from ._trust import TrustView, draw_strip, error_overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["HeadlessPreview"]

logger = logging.getLogger(__name__)

_MAX_PENDING_SNAPSHOTS = 2  # more waiting snapshots are skipped (and logged)
_STOP = object()


class HeadlessPreview:
    """Write ``preview_NNNNNN.png`` every ``snapshot_every`` pairs and a stats log.

    Each snapshot is a 1×4 panel figure (low-dose upsampled, restored, reference,
    restored − reference), named by the number of pairs received so far; every
    image panel has a colour bar of its display range (ADU; the difference's
    signed, blue-white-red) and a scale bar in µm.  The pixel size is
    :attr:`pixel_size_um` if set, else the pair's reference (or low-dose / factor)
    pixel size; without one there is no scale bar.  Once the trust monitor
    reports (:meth:`on_quality`), a fifth panel shows its error map over the
    restored frame and a strip below its local error over time.  Every
    :meth:`on_status` appends one JSON line (status fields, newest pair index and
    time) to ``preview_stats.jsonl``.  Rendering and file writing happen on a
    worker thread; the sink methods only store and enqueue, and never raise.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        snapshot_every: int = 25,
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
            if count % self.snapshot_every == 0:
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
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            logger.warning("headless preview: worker did not finish within 60 s")
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
        self.snapshot_figure(count, pair).savefig(path)
        self._written.append(path)

    def snapshot_figure(self, count: int, pair: Pair) -> Figure:
        """The figure of the snapshot after ``count`` pairs, newest ``pair``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        matched, frame, _ = self._latest.latest()
        pair = matched or pair
        panels = panels_for(
            pair,
            frame,
            method=self.method,
            reference_transform=self.reference_transform,
        )
        px = self.pixel_size_um or _pixel_size_um(pair)
        trust_lines = self.trust.lines()
        if not trust_lines:
            fig = Figure(figsize=(4 * 4, 5.2), dpi=self.dpi, layout="constrained")
            FigureCanvasAgg(fig)
            for ax, panel in zip(fig.subplots(1, 4), panels, strict=True):
                _draw_panel(ax, panel, px)
        else:
            fig = Figure(figsize=(5 * 4, 7.0), dpi=self.dpi, layout="constrained")
            FigureCanvasAgg(fig)
            grid = fig.add_gridspec(2, 5, height_ratios=(4, 1.2))
            for i, panel in enumerate(panels):
                _draw_panel(fig.add_subplot(grid[0, i]), panel, px)
            self._draw_trust_map(fig.add_subplot(grid[0, 4]), panels[1], px)
            strip = fig.add_subplot(grid[1, :])
            draw_strip(strip, trust_lines, self._trust_level())
            strip.set_title(self.trust.text(), fontsize=9)
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
        fig.suptitle(f"{title}\n{status.line()}", fontsize=9)
        return fig

    def _trust_level(self) -> float | None:
        return _trust_level_of(self.trust)

    def _draw_trust_map(
        self, ax: Any, restored: PanelImage, pixel_um: float | None
    ) -> None:
        m = self.trust.error_map()
        if m is None or restored.pixels is None:
            _draw_panel(
                ax,
                PanelImage(
                    "Trust error map",
                    None,
                    restored.shape,
                    None,
                    "no reference checked yet",
                ),
            )
            return
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
        ax.set_axis_off()
        ax.imshow(error_overlay(restored.pixels, emap, level), interpolation="nearest")
        _draw_scale_bar(ax, restored.pixels.shape, pixel_um)
        ax.set_title(title, fontsize=10)


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


def _draw_scale_bar(
    ax: Any, shape: tuple[int, ...], pixel_um: float | None, *, light: bool = False
) -> None:
    """A bar of a round length in µm (about a fifth of the width), bottom left,
    with its length above it: white, or black on a ``light`` image."""
    from matplotlib.patches import Rectangle
    from matplotlib.patheffects import withStroke

    if not pixel_um or pixel_um <= 0 or not math.isfinite(pixel_um):
        return
    h, w = shape[:2]
    um = nice_length_um(0.2 * w * pixel_um)
    length, thick = um / pixel_um, max(1.0, 0.015 * h)
    x0, y0 = 0.05 * w - 0.5, 0.95 * h - 0.5 - thick
    fg, bg = ("black", "white") if light else ("white", "black")
    outline = [withStroke(linewidth=2, foreground=bg)]
    ax.add_patch(Rectangle((x0, y0), length, thick, facecolor=fg, edgecolor=bg, lw=0.5))
    ax.text(
        x0 + length / 2,
        y0 - 0.01 * h,
        f"{um:g} µm",
        color=fg,
        ha="center",
        va="bottom",
        fontsize=9,
        path_effects=outline,
    )


def _draw_colour_bar(ax: Any, panel: PanelImage) -> None:
    """The panel's display range as a colour bar: gray ADU, or the signed
    blue-white-red of restored − reference."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    lo, hi = panel.limits or (0.0, 255.0)
    signed = panel.pixels is not None and panel.pixels.ndim == 3
    cmap = ListedColormap(diverging_lut() / 255.0) if signed else "gray"
    bar = ax.figure.colorbar(
        ScalarMappable(Normalize(lo, hi), cmap),
        ax=ax,
        orientation="horizontal",
        fraction=0.05,
        pad=0.02,
    )
    bar.set_label("restored − reference (ADU)" if signed else "ADU", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _draw_panel(ax: Any, panel: PanelImage, pixel_um: float | None = None) -> None:
    ax.set_axis_off()
    if panel.pixels is None:
        ax.imshow(np.full(panel.shape, 64, np.uint8), cmap="gray", vmin=0, vmax=255)
        ax.text(
            0.5,
            0.5,
            panel.note,
            color="white",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_title(panel.title, fontsize=10)
        return
    ax.imshow(panel.pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(panel.title, fontsize=10)
    _draw_colour_bar(ax, panel)
    signed = panel.pixels.ndim == 3  # the blue-white-red difference
    _draw_scale_bar(ax, panel.pixels.shape, pixel_um, light=signed)
