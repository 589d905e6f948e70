"""Preview: display mapping, status, headless snapshots, and the Qt window offscreen."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psygnal import Signal, SignalGroup

from pairscope.acquire import Pair, PairedSignals
from pairscope.preview import (
    HeadlessPreview,
    PreviewSink,
    PreviewStatus,
    auto_limits,
    connect_preview,
    panels_for,
    to_uint8,
    upsample,
)

try:
    from pairscope.restore import RestoredFrame
except ImportError:  # restore not importable: same fields, duck-typed

    @dataclass(frozen=True)
    class RestoredFrame:  # type: ignore[no-redef]
        index: int
        image: np.ndarray
        latency_ms: float
        model_name: str
        model_sha256: str


FACTOR = 2


def scene(index: int, n: int = 96, seed: int = 0) -> np.ndarray:
    """Blobs that drift with ``index`` on an ``n``×``n`` fine grid (float)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    img = np.full((n, n), 100.0, np.float32)
    for _ in range(12):
        cy, cx = rng.uniform(8, n - 8, 2)
        img += 900 * np.exp(-((yy - cy) ** 2 + (xx - cx - index) ** 2) / 8.0)
    return img


def make_pair(index: int, *, reference: bool = True) -> Pair:
    rng = np.random.default_rng(index)
    truth = scene(index)
    n = truth.shape[0] // FACTOR
    low = truth.reshape(n, FACTOR, n, FACTOR).sum(axis=(1, 3)) * 0.1
    low = rng.poisson(low).astype(np.uint16)
    ref = rng.poisson(truth).astype(np.uint16) if reference else None
    return Pair(index, low, ref)


def make_restored(index: int) -> RestoredFrame:
    noise = np.random.default_rng(100 + index).normal(0, 20, (96, 96))
    image = (scene(index) + noise).astype(np.float32)
    return RestoredFrame(index, image, 12.5, "demo-unet", "0" * 64)


# -- pure numpy --------------------------------------------------------------------
def test_contrast_and_upsampling() -> None:
    img = np.arange(10000, dtype=np.float32).reshape(100, 100)
    lo, hi = auto_limits(img)
    assert lo == pytest.approx(np.percentile(img, 0.5))
    assert hi == pytest.approx(np.percentile(img, 99.5))
    assert auto_limits(img - 5000, symmetric=True)[0] < 0
    assert auto_limits(np.zeros((4, 4))) == (0.0, 1.0)  # never an empty range
    u8 = to_uint8(img, (lo, hi))
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255
    small = np.array([[0, 10], [20, 30]], np.uint16)
    near = upsample(small, 2)
    assert near.shape == (4, 4) and near[1, 1] == 0 and near[3, 3] == 30
    bil = upsample(small, 2, "bilinear")
    assert bil.shape == (4, 4) and 0 < bil[1, 1] < 30
    assert np.allclose(upsample(np.full((3, 3), 7.0), 4, "bilinear"), 7.0)


def test_panels_match_by_index_and_placeholders() -> None:
    panels = panels_for(make_pair(3), make_restored(3))
    assert [p.pixels is not None for p in panels] == [True] * 4
    assert panels[0].shape == (96, 96) and panels[3].pixels.shape == (96, 96, 3)
    other = panels_for(make_pair(4), make_restored(3))  # restored of another pair
    assert other[1].pixels is not None and other[3].pixels is None
    bare = panels_for(make_pair(5, reference=False), None)
    assert bare[2].note == "no reference for this pair" and bare[3].pixels is None


def test_status_line() -> None:
    st = PreviewStatus(pairs=12, acquisition_fps=9.84, skipped=3, model_name="m")
    line = st.line()
    for part in (
        "pairs 12",
        "9.8 pairs/s",
        "p50 –",
        "preview skipped 3 (newer frames came; all are saved)",
        "dropped 0 (pairs lost)",
        "model m",
    ):
        assert part in line
    assert "error: boom" in st.replace(error="boom").line()
    assert st.as_dict()["latency_p50_ms"] is None  # JSON-valid


# -- headless ----------------------------------------------------------------------
@pytest.mark.parametrize(("n_pairs", "every", "expected"), [(10, 4, 3), (8, 4, 2)])
def test_headless_snapshots_and_stats(
    tmp_path: Path, n_pairs: int, every: int, expected: int
) -> None:
    sink = HeadlessPreview(tmp_path, snapshot_every=every)
    assert isinstance(sink, PreviewSink)
    for i in range(n_pairs):
        sink.on_restored(make_restored(i))
        sink.on_pair(make_pair(i, reference=i % 3 == 0))
        sink.on_status(PreviewStatus(pairs=i + 1))
    sink.on_error("writer queue full")
    written = sink.close()
    pngs = sorted(tmp_path.glob("preview_*.png"))
    assert len(pngs) == expected
    assert pngs[-1].name == f"preview_{n_pairs:06d}.png"
    assert set(pngs) <= set(written) and sink.stats_path in written
    from matplotlib.image import imread

    for png in pngs:
        img = imread(png)
        assert img.shape[0] > 100 and img.std() > 0.05
    lines = sink.stats_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == n_pairs
    assert [r["pairs"] for r in records] == list(range(1, n_pairs + 1))
    assert records[-1]["pair_index"] is not None
    assert sink.close() == written  # idempotent


def test_headless_never_raises(tmp_path: Path) -> None:
    sink = HeadlessPreview(tmp_path, snapshot_every=1)
    sink.on_pair("not a pair")  # type: ignore[arg-type]  # rendering fails: logged
    sink.on_restored(None)  # type: ignore[arg-type]
    sink.close()


def _pixels_of(pair: Pair, reference_um: float) -> Pair:
    meta = {
        "reference": {"pixel_size_um": reference_um},
        "lowdose": {"pixel_size_um": reference_um * FACTOR},
    }
    return Pair(pair.index, pair.lowdose, pair.reference, meta)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reference_um", "override", "bar"),
    [(0.1, None, "1 µm"), (0.1, 0.5, "5 µm"), (None, None, None)],
)
def test_headless_snapshot_has_scale_and_colour_bars(
    tmp_path: Path, reference_um: float | None, override: float | None, bar: str | None
) -> None:
    """Each image panel: a scale bar in µm (a round length near a fifth of the
    96-pixel width) and a colour bar of its display range; the difference's is
    signed blue-white-red."""
    from matplotlib.collections import QuadMesh
    from matplotlib.patches import Rectangle

    sink = HeadlessPreview(tmp_path, snapshot_every=100)
    sink.pixel_size_um = override
    pair = make_pair(3)
    if reference_um is not None:
        pair = _pixels_of(pair, reference_um)
    sink.on_restored(make_restored(3))
    sink.on_pair(pair)
    fig = sink.snapshot_figure(1, pair)
    sink.close()
    panels = [ax for ax in fig.axes if ax.images]
    colour_bars = [ax for ax in fig.axes if not ax.images]
    assert len(panels) == 4 and len(colour_bars) == 4
    px = override or reference_um
    for ax in panels:
        texts = [t.get_text() for t in ax.texts]
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        if bar is None:
            assert texts == [] and bars == []
            continue
        assert texts == [bar]
        assert px is not None
        assert bars[0].get_width() * px == pytest.approx(float(bar.split()[0]))
    labels = [ax.get_xlabel() for ax in colour_bars]
    assert labels == ["ADU", "ADU", "ADU", "restored − reference (ADU)"]
    lo, hi = colour_bars[3].get_xlim()
    assert lo == pytest.approx(-hi) and hi > 0  # signed, centred on zero
    (mesh,) = [c for c in colour_bars[3].collections if isinstance(c, QuadMesh)]
    cmap = mesh.get_cmap()
    blue, white, red = cmap(0.0), cmap(0.5), cmap(1.0)
    assert blue[2] > blue[0] and red[0] > red[2] and min(white[:3]) > 0.9
    low_lo, low_hi = colour_bars[0].get_xlim()
    assert 0 <= low_lo < low_hi  # the low-dose panel's display range, ADU


# -- wiring ------------------------------------------------------------------------
class _RestorerEvents(SignalGroup):
    restored = Signal(object)
    error = Signal(str)
    model_swapped = Signal(str)


@dataclass
class _Stats:
    received: int = 5
    restored: int = 4
    skipped: int = 1
    errors: int = 0
    fps: float = 8.0
    latency_p50_ms: float = 40.0
    latency_p99_ms: float = 90.0
    device: str = "cpu"
    model_name: str = "demo-unet"


class _FakeRestorer:
    def __init__(self) -> None:
        self.events = _RestorerEvents()

    def stats(self) -> _Stats:
        return _Stats()


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_pair(self, pair: Pair) -> None:
        self.calls.append(("pair", pair.index))

    def on_restored(self, frame: Any) -> None:
        self.calls.append(("restored", frame.index))

    def on_status(self, status: PreviewStatus) -> None:
        self.calls.append(("status", status))

    def on_error(self, message: str) -> None:
        self.calls.append(("error", message))

    def close(self) -> None:
        pass


def test_connect_preview() -> None:
    acq, restorer, sink = PairedSignals(), _FakeRestorer(), _Recorder()
    link = connect_preview(sink, acquisition_events=acq, restorer=restorer)
    for i in range(3):
        acq.pairReady.emit(make_pair(i))
        restorer.events.restored.emit(make_restored(i))
    acq.pairIncomplete.emit(make_pair(3, reference=False), "reference frame missing")
    restorer.events.error.emit("restoring frame 4 failed")
    kinds = [k for k, _ in sink.calls]
    assert kinds.count("pair") == 3 and kinds.count("restored") == 3
    assert ("error", "restoring frame 4 failed") in sink.calls
    st = link.status()
    assert (st.pairs, st.dropped, st.skipped, st.model_name) == (3, 1, 1, "demo-unet")
    assert st.error == "restoring frame 4 failed" and st.latency_p99_ms == 90.0
    link.disconnect()
    n = len(sink.calls)
    acq.pairReady.emit(make_pair(9))
    assert len(sink.calls) == n and sink.calls[-1][0] == "status"


# -- Qt window (offscreen) ---------------------------------------------------------
@pytest.fixture(scope="module")
def qapp() -> Any:
    pytest.importorskip("qtpy")
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture
def window(qapp: Any) -> Any:
    from pairscope.preview import PreviewWindow

    win = PreviewWindow()
    win.resize(900, 820)
    win.show()
    qapp.processEvents()
    yield win
    win.close()
    win.deleteLater()
    qapp.processEvents()


def screenshot(win: Any) -> np.ndarray:
    from qtpy.QtGui import QImage

    img = win.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    raw = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes())
    bgra = raw.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, : img.width()]
    return bgra[..., 2::-1].copy()  # RGB32 is B, G, R, A in memory (little-endian)


def panel_pixels(win: Any, shot: np.ndarray, i: int) -> np.ndarray:
    from qtpy.QtCore import QPoint

    view = win.views[i].viewport()
    top_left = view.mapTo(win, QPoint(0, 0))
    y, x = top_left.y(), top_left.x()
    return shot[y : y + view.height(), x : x + view.width()].astype(np.float32)


def show(win: Any, qapp: Any, pair: Pair, frame: Any | None = None) -> None:
    win.on_pair(pair)
    if frame is not None:
        win.on_restored(frame)
    win.refresh()
    qapp.processEvents()


def test_window_shows_four_panels(window: Any, qapp: Any) -> None:
    window.on_status(PreviewStatus(pairs=7, acquisition_fps=9.5, model_name="demo"))
    show(window, qapp, make_pair(7), make_restored(7))
    shot = screenshot(window)
    from matplotlib.image import imsave

    imsave("/tmp/preview_window.png", shot)
    for i in range(4):
        assert panel_pixels(window, shot, i).std() > 10, window.titles[i].text()
    assert window.titles[3].text().startswith("Restored − reference")
    assert "pairs 7" in window.status_label.text()


def test_window_placeholder_without_reference(window: Any, qapp: Any) -> None:
    show(window, qapp, make_pair(2, reference=False), make_restored(2))
    assert window.panels[2].pixels is None and window.panels[3].pixels is None
    assert window.views[2].note_item.text() == "no reference for this pair"
    shot = screenshot(window)
    ref_panel = panel_pixels(window, shot, 2)
    assert ref_panel.std() > 2  # gray placeholder with its text
    assert ref_panel.std() < panel_pixels(window, shot, 1).std()


def test_window_linked_zoom_and_pan(window: Any, qapp: Any) -> None:
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent

    show(window, qapp, make_pair(1), make_restored(1))
    before = window.views[0].transform().m11()
    view = window.views[2]
    pos = QPointF(view.viewport().rect().center())
    event = QWheelEvent(
        pos,
        QPointF(view.viewport().mapToGlobal(pos.toPoint())),
        QPoint(0, 0),
        QPoint(0, 240),  # two notches
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    qapp.sendEvent(view.viewport(), event)
    scales = [v.transform().m11() for v in window.views]
    assert scales[2] == pytest.approx(before * 1.25**2)
    assert scales == pytest.approx([scales[2]] * 4)
    bar = window.views[0].horizontalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(bar.maximum() // 3)
    assert {v.horizontalScrollBar().value() for v in window.views} == {bar.value()}


def test_window_auto_vs_manual_contrast(window: Any, qapp: Any) -> None:
    show(window, qapp, make_pair(4), make_restored(4))
    auto = panel_pixels(window, screenshot(window), 1)
    auto_limits_shown = window.panels[1].limits
    window.auto_contrast.setChecked(False)  # starts from the shown limits
    assert window.min_spin.isEnabled()
    assert window.max_spin.value() == pytest.approx(auto_limits_shown[1], abs=0.1)
    window.max_spin.setValue(auto_limits_shown[1] * 4)
    window.refresh()
    qapp.processEvents()
    manual = panel_pixels(window, screenshot(window), 1)
    assert window.panels[1].limits == window.manual_limits
    assert manual.mean() < auto.mean() - 5  # a wider range is darker


def test_window_fed_from_worker_thread(window: Any, qapp: Any) -> None:
    def feed() -> None:
        for i in range(30):
            window.on_pair(make_pair(i))
            window.on_restored(make_restored(i))
            window.on_status(PreviewStatus(pairs=i + 1))

    worker = threading.Thread(target=feed)
    worker.start()
    while worker.is_alive():
        qapp.processEvents()  # the timer repaints meanwhile
    worker.join()
    window.refresh()
    qapp.processEvents()
    last = make_pair(29).reference
    assert np.array_equal(window.panels[2].pixels, to_uint8(last, auto_limits(last)))
    assert "pairs 30" in window.status_label.text()


def test_window_shows_errors_in_red(window: Any, qapp: Any) -> None:
    window.on_error("pair 12 incomplete: reference frame missing")
    window.refresh()
    assert "error: pair 12 incomplete" in window.status_label.text()
    assert "#d00000" in window.status_label.styleSheet()
    assert not math.isnan(window.views[0].transform().m11())
