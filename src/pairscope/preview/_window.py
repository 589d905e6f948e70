"""The live preview window (Qt; the only module of pairscope that imports Qt).

The sink methods run on worker threads: they store the newest data under a lock.
A QTimer on the GUI thread repaints only when something changed.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np
from qtpy.QtCore import QRectF, Qt, QThread, QTimer
from qtpy.QtGui import QColor, QFont, QImage, QPixmap, QTransform, QWheelEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pairscope.acquire import Pair

from ._contrast import AUTO_PERCENTILES, PANEL_TITLES, PanelImage, panels_for
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
        self.scene().addItem(self.pixmap_item)
        self.scene().addItem(self.note_item)
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
        for i, (title, view) in enumerate(zip(self.titles, self.views, strict=True)):
            title.setStyleSheet("font-weight: bold")
            box = QVBoxLayout()
            box.addWidget(title)
            box.addWidget(view, 1)
            grid.addLayout(box, i // 2, i % 2)
            for bar in (view.horizontalScrollBar(), view.verticalScrollBar()):
                bar.valueChanged.connect(lambda _, v=view: self._sync_scroll(v))

        lo, hi = AUTO_PERCENTILES
        self.auto_contrast = QCheckBox(f"Auto contrast ({lo:g}–{hi:g} %)")
        self.auto_contrast.setChecked(True)
        self.min_spin, self.max_spin = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, value in ((self.min_spin, 0.0), (self.max_spin, 1000.0)):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(1)
            spin.setValue(value)
            spin.setEnabled(False)
            spin.valueChanged.connect(self._contrast_changed)
        self.auto_contrast.toggled.connect(self._auto_toggled)
        fit = QPushButton("Fit")
        fit.clicked.connect(self.fit)
        controls = QHBoxLayout()
        for w in (self.auto_contrast, QLabel("min"), self.min_spin, QLabel("max")):
            controls.addWidget(w)
        controls.addWidget(self.max_spin)
        controls.addStretch(1)
        controls.addWidget(fit)

        self.trust = TrustView()
        self._trust_shown = -1
        self._trust_drawn_at = 0.0
        self.trust_overlay = QCheckBox("Trust error overlay on Restored")
        self.trust_overlay.setChecked(True)
        self.trust_overlay.toggled.connect(self._contrast_changed)
        self.trust_label = QLabel(self.trust.text())
        self.trust_label.setWordWrap(True)
        self.trust_strip = QLabel()
        self.trust_strip.setMinimumHeight(60)
        controls.addWidget(self.trust_overlay)

        self.status_label = QLabel(PreviewStatus().line())
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        layout = QVBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addLayout(controls)
        layout.addWidget(self.trust_strip)
        layout.addWidget(self.trust_label)
        layout.addWidget(self.status_label)
        self.resize(1000, 900)

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
        """The manual (min, max), or ``None`` under automatic contrast."""
        if self.auto_contrast.isChecked():
            return None
        return self.min_spin.value(), self.max_spin.value()

    def refresh(self) -> None:
        """Repaint what changed since the last call (the timer calls this)."""
        if self._close_requested:
            self._close_requested = False
            self.close()
            return
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

    def _show_frames(self, pair: Pair, frame: RestoredLike | None) -> None:
        self.panels = panels_for(
            pair,
            frame,
            limits=self.manual_limits,
            method=self.method,
            reference_transform=self.reference_transform,
        )
        m = self.trust.error_map()
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
        if self._shape != self.panels[0].shape:
            self._shape = self.panels[0].shape
            self.fit()

    def _show_status(self, status: PreviewStatus, error: str) -> None:
        if error and not status.error:
            status = status.replace(error=error)
        self.status_label.setText(status.line())
        self.status_label.setStyleSheet("color: #d00000" if status.error else "")

    def _auto_toggled(self, auto: bool) -> None:
        for spin in (self.min_spin, self.max_spin):
            spin.setEnabled(not auto)
        if not auto and self.panels and self.panels[1].limits is not None:
            lo, hi = self.panels[1].limits  # start from what the restored panel shows
            self.min_spin.blockSignals(True)
            self.min_spin.setValue(lo)
            self.min_spin.blockSignals(False)
            self.max_spin.setValue(hi)
        self._contrast_changed()

    def _contrast_changed(self, *_: Any) -> None:
        self._contrast_version += 1

    def closeEvent(self, event: Any) -> None:
        self._timer.stop()
        super().closeEvent(event)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self._auto_fit and self._shape is not None:
            self.fit()

    def showEvent(self, event: Any) -> None:
        if not self._timer.isActive():
            self._timer.start()
        super().showEvent(event)
