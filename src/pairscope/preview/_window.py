"""The live preview window (Qt; the only module of pairscope that imports Qt).

The sink methods run on worker threads: they store the newest data under a lock.
A QTimer on the GUI thread repaints only when something changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from qtpy.QtCore import QRectF, Qt, QThread, QTimer
from qtpy.QtGui import QColor, QFont, QImage, QPen, QPixmap, QTransform, QWheelEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from pairscope.acquire import Pair

from ._contrast import (
    AUTO_PERCENTILES,
    PANEL_TITLES,
    PanelImage,
    diverging_lut,
    nice_length_um,
    panels_for,
)
from ._status import LatestFrames, PreviewStatus, RestoredLike
from ._trust import TrustView, error_overlay, render_strip_rgb

__all__ = ["PreviewWindow"]

_ZOOM_STEP = 1.25  # per wheel notch
_TRUST_REDRAW_S = 0.5  # the trust strip is redrawn at most twice a second


class _View(QGraphicsView):
    """One image panel; wheel zoom and drag pan are forwarded to the window."""

    def __init__(self, owner: PreviewWindow) -> None:
        super().__init__()
        self._owner = owner
        self.setScene(QGraphicsScene(self))
        self.pixmap_item = QGraphicsPixmapItem()
        self.pixmap_item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.note_item = QGraphicsSimpleTextItem()
        self.note_item.setBrush(QColor(235, 235, 235))
        font = QFont()
        font.setPointSize(14)
        self.note_item.setFont(font)
        self.note_item.setFlag(
            QGraphicsSimpleTextItem.GraphicsItemFlag.ItemIgnoresTransformations
        )
        self.scale_bar = QGraphicsRectItem()
        self.scale_bar.setBrush(QColor(255, 255, 255))
        self.scale_bar.setPen(QPen(Qt.PenStyle.NoPen))
        self.scale_text = QGraphicsSimpleTextItem()
        self.scale_text.setBrush(QColor(255, 255, 255))
        self.scale_text.setFlag(
            QGraphicsSimpleTextItem.GraphicsItemFlag.ItemIgnoresTransformations
        )
        self.scene().addItem(self.pixmap_item)
        self.scene().addItem(self.note_item)
        self.scene().addItem(self.scale_bar)
        self.scene().addItem(self.scale_text)
        self.setBackgroundBrush(QColor(25, 25, 25))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        for policy in (
            self.setHorizontalScrollBarPolicy,
            self.setVerticalScrollBarPolicy,
        ):
            policy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumSize(160, 160)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self._owner.zoom(_ZOOM_STEP**steps, source=self)
        event.accept()

    def show_panel(self, panel: PanelImage) -> None:
        h, w = panel.shape
        if panel.pixels is None:
            pix = QPixmap(w, h)
            pix.fill(QColor(70, 70, 70))
            self.note_item.setText(panel.note)
        else:
            pix = QPixmap.fromImage(_qimage(panel.pixels))
            self.note_item.setText("")
        self.pixmap_item.setPixmap(pix)
        rect = QRectF(0, 0, w, h)
        br = self.note_item.boundingRect()  # device pixels: centre the text
        self.note_item.setTransform(
            QTransform.fromTranslate(-br.width() / 2, -br.height() / 2)
        )
        self.note_item.setPos(rect.center())
        if self.scene().sceneRect() != rect:
            self.scene().setSceneRect(rect)

    def show_scale_bar(self, pixel_um: float | None) -> None:
        """A bar of a round length in µm at the bottom left of the image."""
        rect = self.scene().sceneRect()
        if not pixel_um or rect.width() <= 0:
            self.scale_bar.setVisible(False)
            self.scale_text.setVisible(False)
            return
        um = nice_length_um(0.2 * rect.width() * pixel_um)
        length = um / pixel_um
        h = max(2.0, rect.height() / 100)
        x0, y0 = rect.width() * 0.04, rect.height() * 0.95 - h
        self.scale_bar.setRect(QRectF(x0, y0, length, h))
        self.scale_text.setText(f"{um:g} µm")
        self.scale_text.setPos(x0, y0 - 2 * h - 14 / max(self.transform().m11(), 1e-3))
        self.scale_bar.setVisible(True)
        self.scale_text.setVisible(True)


def _qimage(pixels: np.ndarray) -> QImage:
    """A QImage owning a copy of gray (H, W) or RGB (H, W, 3) uint8 pixels."""
    a = np.ascontiguousarray(pixels)
    h, w = a.shape[:2]
    fmt = (
        QImage.Format.Format_Grayscale8 if a.ndim == 2 else QImage.Format.Format_RGB888
    )
    return QImage(a.data, w, h, a.strides[0], fmt).copy()


class PreviewWindow(QWidget):
    """Four linked image panels, contrast controls and a status line.

    Implements :class:`~pairscope.preview.PreviewSink`: ``on_*`` may be called
    from any thread.  Wheel zoom and drag pan on any panel apply to all panels.
    Contrast is automatic (percentiles 0.5/99.5 per panel, the difference
    symmetric) or manual (min/max for the intensity panels, ±(max − min)/2 for
    the difference).
    """

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        method: Literal["nearest", "bilinear"] = "nearest",
        refresh_hz: float = 30.0,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("pairscope preview")
        self.method: Literal["nearest", "bilinear"] = method
        #: maps the reference onto the low-dose camera frame (set by the live session)
        self.reference_transform: Any = None
        self._latest = LatestFrames()
        self._lock = threading.Lock()
        self._status = PreviewStatus()
        self._error = ""
        self._status_version = 0
        self._shown = (-1, -1, -1)  # (frames version, status version, contrast version)
        self._contrast_version = 0
        self._close_requested = False
        self._shape: tuple[int, int] | None = None
        self._syncing = False
        self._auto_fit = True  # refit on resize until the user zooms
        self.panels: list[PanelImage] = []

        self.views = [_View(self) for _ in PANEL_TITLES]
        self.titles = [QLabel(t) for t in PANEL_TITLES]
        grid = QGridLayout()
        boxes = []
        for i, (title, view) in enumerate(zip(self.titles, self.views, strict=True)):
            title.setStyleSheet("font-weight: bold")
            box = QVBoxLayout()
            box.addWidget(title)
            box.addWidget(view, 1)
            grid.addLayout(box, i // 2, i % 2)
            boxes.append(box)
            for bar in (view.horizontalScrollBar(), view.verticalScrollBar()):
                bar.valueChanged.connect(lambda _, v=view: self._sync_scroll(v))

        # difference panel: a signed colour bar under its title
        self.diff_bar = QLabel()
        lut = np.ascontiguousarray(np.repeat(diverging_lut()[None, ::2, :], 10, axis=0))
        self.diff_bar.setPixmap(QPixmap.fromImage(_qimage(lut)))
        self.diff_bar.setToolTip(
            "restored − reference: blue where the restoration is darker than the "
            "reference, white where they agree, red where it is brighter"
        )
        self.diff_bar_text = QLabel("−  0  +")
        bar_row = QHBoxLayout()
        bar_row.addWidget(self.diff_bar)
        bar_row.addWidget(self.diff_bar_text, 1)
        boxes[3].insertLayout(1, bar_row)  # under the difference panel's title
        self.diff_bar_text.setSizePolicy(
            QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred
        )
        for column in (0, 1):  # the panels share the width equally
            grid.setColumnStretch(column, 1)

        # contrast: automatic per panel by default, manual per panel, optionally
        # linked across the three intensity panels
        lo, hi = AUTO_PERCENTILES
        self._manual: list[tuple[float, float] | None] = [None] * len(PANEL_TITLES)
        self.contrast_panel = QComboBox()
        self.contrast_panel.addItems([t.split(" (")[0] for t in PANEL_TITLES])
        self.contrast_panel.setCurrentIndex(1)
        self.contrast_panel.currentIndexChanged.connect(self._panel_selected)
        self.auto_contrast = QCheckBox(f"auto ({lo:g}–{hi:g} %)")
        self.auto_contrast.setChecked(True)
        self.link_contrast = QCheckBox("link intensity panels")
        self.min_spin, self.max_spin = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, value in ((self.min_spin, 0.0), (self.max_spin, 1000.0)):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(1)
            spin.setValue(value)
            spin.setEnabled(False)
            spin.valueChanged.connect(self._manual_changed)
        self.auto_contrast.toggled.connect(self._auto_toggled)
        self.link_contrast.toggled.connect(self._manual_changed)
        fit = QPushButton("Fit")
        fit.clicked.connect(self.fit)
        self.stop_button = QPushButton("Stop acquisition")
        self.stop_button.setToolTip(
            "Stop after the current frame; every acquired pair is kept"
        )
        self.stop_button.clicked.connect(self.request_stop)
        self.fine_tune_button = QPushButton("Fine-tune now")
        self.fine_tune_button.setToolTip(
            "Train a candidate on the pairs logged so far (separate process); it "
            "replaces the model only if it scores better on held-back pairs "
            "(finetune.jsonl)"
        )
        self.fine_tune_button.setEnabled(False)
        self.fine_tune_button.clicked.connect(self.request_fine_tune)
        #: starts a fine-tuning candidate, True if one started (live session sets it)
        self.on_fine_tune: Callable[[], bool] | None = None
        self.stop_requested = False
        #: called at once by the Stop button and by closing the window mid-run
        #: (the live session sets it to the acquisition's cancel)
        self.on_stop: Callable[[], None] | None = None
        self.finished = False
        controls = QHBoxLayout()
        for w in (
            QLabel("Contrast"),
            self.contrast_panel,
            self.auto_contrast,
            QLabel("min"),
            self.min_spin,
            QLabel("max"),
            self.max_spin,
            self.link_contrast,
        ):
            controls.addWidget(w)
        controls.addStretch(1)
        buttons = QHBoxLayout()  # a second row: the window fits 1280x720 screens
        buttons.addWidget(fit)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.fine_tune_button)
        #: pixel size (µm) of the panels' grid (the reference camera's): scale bar
        self.pixel_size_um: float | None = None
        #: render panels on a worker thread (the live session turns this on)
        self.render_async = False
        self._render_pool: ThreadPoolExecutor | None = None
        self._rendering: Future[Any] | None = None

        self.trust = TrustView()
        self._trust_shown = -1
        self._trust_drawn_at = 0.0
        self.trust_overlay = QCheckBox(
            "Trust overlay on Restored (outside the interval, else local error)"
        )
        self.trust_overlay.setChecked(True)
        self.trust_overlay.toggled.connect(self._contrast_changed)
        self.trust_label = QLabel(self.trust.text())
        self.trust_label.setWordWrap(True)
        self.trust_strip = QLabel()
        self.trust_strip.setMinimumHeight(60)
        buttons.addWidget(self.trust_overlay)
        buttons.addStretch(1)

        self.status_label = QLabel(PreviewStatus().line())
        self.status_label.setWordWrap(True)
        self.status_label.setToolTip(
            "pairs/s: acquisition rate. restorer fps and latency: live restoration. "
            "skipped: low-dose frames the preview did not restore because a newer "
            "one arrived (newest frame wins): no data is lost, every pair is on "
            "disk. dropped: data frames lost (should stay 0)."
        )
        self.status_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        layout = QVBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addLayout(controls)
        layout.addLayout(buttons)
        layout.addWidget(self.trust_strip)
        layout.addWidget(self.trust_label)
        layout.addWidget(self.status_label)
        self.resize(1000, 680)  # fits a 1280x720 screen with its title bar

        self._timer = QTimer(self)
        self._timer.setInterval(max(1, round(1000 / refresh_hz)))
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    # -- sink protocol (any thread: store only) -------------------------------------
    def on_pair(self, pair: Pair) -> None:
        self._latest.put_pair(pair)

    def on_restored(self, frame: RestoredLike) -> None:
        self._latest.put_restored(frame)

    def on_status(self, status: PreviewStatus) -> None:
        with self._lock:
            self._status = status
            self._status_version += 1

    def on_error(self, message: str) -> None:
        with self._lock:
            self._error = str(message)
            self._status_version += 1

    def on_quality(self, result: Any) -> None:
        """A trust monitor's check (:class:`pairscope.trust.CheckResult`)."""
        self.trust.put(result)

    def close(self) -> bool:
        """Close the window (from a worker thread: on the next timer tick)."""
        if QThread.currentThread() != self.thread():
            self._close_requested = True
            return True
        self._timer.stop()
        return super().close()

    # -- GUI thread ---------------------------------------------------------------
    @property
    def manual_limits(self) -> tuple[float, float] | None:
        """The selected panel's manual (min, max), or ``None`` if automatic."""
        return self._manual[self.contrast_panel.currentIndex()]

    def panel_limits(self) -> list[tuple[float, float] | None]:
        """Per-panel manual limits (``None``: automatic), links applied."""
        return list(self._manual)

    def request_stop(self) -> None:
        """The Stop button: stop the run after the current frame (``on_stop``)."""
        if self.finished:
            return
        self.stop_requested = True
        if self.on_stop is not None:
            self.on_stop()
        if QThread.currentThread() == self.thread():
            self.stop_button.setEnabled(False)
            self.stop_button.setText("Stopping…")

    def enable_fine_tune(self, start: Callable[[], bool]) -> None:
        """Offer the fine-tune button; ``start()`` starts a candidate."""
        self.on_fine_tune = start
        self.fine_tune_button.setEnabled(True)

    def request_fine_tune(self) -> bool:
        """The fine-tune button: a candidate now, unless one is training."""
        if self.on_fine_tune is None or self.finished:
            return False
        started = self.on_fine_tune()
        self.fine_tune_button.setText(
            "Fine-tuning…" if started else "Fine-tune now (one is training)"
        )
        return started

    def set_finished(self, message: str) -> None:
        """The run ended: say so, and keep the window open for looking."""
        self.finished = True
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Finished")
        self.fine_tune_button.setEnabled(False)
        self.setWindowTitle(f"pairscope — finished: {message}")
        with self._lock:
            self._error = ""
            self._status = self._status.replace(error="")
            self._status_version += 1
        self._finished_message = message

    _finished_message = ""
    #: the QApplication the live session keeps alive with the window
    _app_ref: Any = None

    def refresh(self) -> None:
        """Repaint what changed since the last call (the timer calls this)."""
        if self._close_requested:
            self._close_requested = False
            self.close()
            return
        self._collect_render()
        pair, frame, version = self._latest.latest()
        with self._lock:
            status, error, status_version = (
                self._status,
                self._error,
                self._status_version,
            )
        if status_version != self._shown[1]:
            self._show_status(status, error)
        if pair is not None and (version, self._contrast_version) != (
            self._shown[0],
            self._shown[2],
        ):
            self._show_frames(pair, frame)
        self._shown = (version, status_version, self._contrast_version)
        self._show_trust()

    def _show_trust(self) -> None:
        import time

        version = self.trust.version
        now = time.monotonic()
        if version == self._trust_shown or now - self._trust_drawn_at < _TRUST_REDRAW_S:
            return
        self._trust_shown, self._trust_drawn_at = version, now
        self.trust_label.setText(self.trust.text())
        m = self.trust.error_map()
        width = max(300, self.width() - 30)
        rgb = render_strip_rgb(
            self.trust.lines(), None if m is None else m[2], (width, 120)
        )
        self.trust_strip.setPixmap(QPixmap.fromImage(_qimage(rgb)))
        self._contrast_version += 1  # re-show the frames with the new overlay

    def zoom(self, factor: float, *, source: QGraphicsView | None = None) -> None:
        """Scale every panel by ``factor`` (around the mouse on ``source``)."""
        src = source or self.views[0]
        self._auto_fit = False
        src.scale(factor, factor)
        self._link_from(src)

    def fit(self) -> None:
        """Fit the whole image into the panels (all panels alike)."""
        view = self.views[0]
        self._auto_fit = True
        view.fitInView(view.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self._link_from(view)

    def _link_from(self, src: QGraphicsView) -> None:
        t: QTransform = src.transform()
        self._syncing = True
        try:
            for v in self.views:
                if v is not src:
                    v.setTransform(t)
        finally:
            self._syncing = False
        self._sync_scroll(src)

    def _sync_scroll(self, src: QGraphicsView) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            h, v = src.horizontalScrollBar().value(), src.verticalScrollBar().value()
            for view in self.views:
                if view is not src:
                    view.horizontalScrollBar().setValue(h)
                    view.verticalScrollBar().setValue(v)
        finally:
            self._syncing = False

    def _render(self, pair: Pair, frame: RestoredLike | None) -> list[PanelImage]:
        return panels_for(
            pair,
            frame,
            limits=self.panel_limits(),
            method=self.method,
            reference_transform=self.reference_transform,
        )

    def _show_frames(self, pair: Pair, frame: RestoredLike | None) -> None:
        """Render (here, or on the render thread with ``render_async``) and show;
        a closed window's render thread is gone, so it renders here."""
        if not self.render_async or self._closed:
            self._present(self._render(pair, frame), pair, frame)
            return
        if self._rendering is not None and not self._rendering.done():
            self._pending = True  # one render in flight: decimate, never queue
            return
        if self._render_pool is None:
            self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="preview")
        self._rendering = self._render_pool.submit(self._render, pair, frame)
        self._rendering_of = (pair, frame)

    _pending = False
    _closed = False
    _rendering_of: tuple[Pair, RestoredLike | None] | None = None

    def _collect_render(self) -> None:
        fut = self._rendering
        if fut is None or not fut.done():
            return
        self._rendering = None
        if fut.cancelled():  # the window closed: the newest is rendered here
            self._shown = (-1, self._shown[1], self._shown[2])
            return
        try:
            panels = fut.result()
        except Exception as exc:  # a bad frame must not break the window
            self.on_error(f"preview could not render a frame: {exc}")
            return
        assert self._rendering_of is not None
        self._present(panels, *self._rendering_of)
        if self._pending:
            self._pending = False
            self._shown = (-1, self._shown[1], self._shown[2])  # render the newest

    def _present(
        self, panels: list[PanelImage], pair: Pair, frame: RestoredLike | None
    ) -> None:
        self.panels = panels
        outside = self.trust.outside_map()  # 1 where outside the interval
        m = (outside[0], outside[1], 0.5) if outside else self.trust.error_map()
        restored = self.panels[1]
        if (
            m is not None
            and self.trust_overlay.isChecked()
            and restored.pixels is not None
        ) and restored.pixels.ndim == 2:
            tinted = error_overlay(restored.pixels, m[1], m[2])
            self.panels[1] = PanelImage(
                restored.title,
                tinted,
                restored.shape,
                restored.limits,
                restored.note,
            )
        for view, title, panel in zip(
            self.views, self.titles, self.panels, strict=True
        ):
            view.show_panel(panel)
            text = panel.title
            if (
                panel is self.panels[1]
                and frame is not None
                and frame.index != pair.index
            ):
                text += f" (pair {frame.index})"
            if panel.limits is not None:
                text += f"  [{panel.limits[0]:.4g}, {panel.limits[1]:.4g}]"
            title.setText(text)
        diff = self.panels[3].limits
        self.diff_bar_text.setText(
            f"{diff[0]:.4g} … 0 … {diff[1]:+.4g} ADU (blue: restored darker, red: "
            "brighter)"
            if diff is not None
            else "no difference for this pair"
        )
        if self._shape != self.panels[0].shape:
            self._shape = self.panels[0].shape
            self.fit()
        for view in self.views:
            view.show_scale_bar(self.pixel_size_um)

    def _show_status(self, status: PreviewStatus, error: str) -> None:
        if error and not status.error:
            status = status.replace(error=error)
        line = status.line()
        if self.finished:
            line = f"FINISHED — {self._finished_message}. {line}"
        self.status_label.setText(line)
        self.status_label.setStyleSheet("color: #d00000" if status.error else "")

    def _auto_toggled(self, auto: bool) -> None:
        for spin in (self.min_spin, self.max_spin):
            spin.setEnabled(not auto)
        p = self.contrast_panel.currentIndex()
        shown = self.panels[p].limits if self.panels else None
        if not auto and shown is not None:
            self._set_spins(*shown)  # start from what the panel shows
        self._manual_changed()

    def _set_spins(self, lo: float, hi: float) -> None:
        for spin, v in ((self.min_spin, lo), (self.max_spin, hi)):
            spin.blockSignals(True)
            spin.setValue(v)
            spin.blockSignals(False)

    def _panel_selected(self, p: int) -> None:
        manual = self._manual[p]
        self.auto_contrast.blockSignals(True)
        self.auto_contrast.setChecked(manual is None)
        self.auto_contrast.blockSignals(False)
        for spin in (self.min_spin, self.max_spin):
            spin.setEnabled(manual is not None)
        shown = manual or (self.panels[p].limits if self.panels else None)
        if shown is not None:
            self._set_spins(*shown)

    def _manual_changed(self, *_: Any) -> None:
        p = self.contrast_panel.currentIndex()
        limits = (
            None
            if self.auto_contrast.isChecked()
            else (self.min_spin.value(), self.max_spin.value())
        )
        self._manual[p] = limits
        if self.link_contrast.isChecked() and p < 3:
            for i in range(3):
                self._manual[i] = limits
        self._contrast_changed()

    def _contrast_changed(self, *_: Any) -> None:
        self._contrast_version += 1

    def closeEvent(self, event: Any) -> None:
        if not self.finished:  # closing the window mid-run stops the run
            self.request_stop()
        self._timer.stop()
        self._closed = True
        if self._render_pool is not None:
            self._render_pool.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(event)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self._auto_fit and self._shape is not None:
            self.fit()

    def showEvent(self, event: Any) -> None:
        if not self._timer.isActive():
            self._timer.start()
        super().showEvent(event)
