"""The live window obeys (close, Stop, Ctrl-C stop the run) and informs (offscreen Qt).

Each test runs a real live session on the demo rig with the real Qt window
(``QT_QPA_PLATFORM=offscreen``); the user's actions are the window's own widgets.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq

import pairscope
from pairscope.config import AcquisitionSettings
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.live import LiveOptions, run_live

from ._cli import assert_cancelled_cleanly, interrupted_demo

FRAMES = 2000  # far more than a test waits for: only a stop ends these runs
INTERVAL_S = 0.05
# A stop ends the cameras' burst after the current frame; the frames they had taken
# by then are all paired and kept, and on a busy machine the acquisition thread may
# be several frames behind the cameras.  So a stop that worked ends the run within
# this many pairs of the stop (2 s of frames); one that did not runs on to the
# give-up below (90 s, some 1600 pairs).
STOPPED_WITHIN = 40


@pytest.fixture(scope="module")
def qapp() -> Any:
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def _preview_window() -> Any:
    from qtpy.QtWidgets import QApplication

    from pairscope.preview import PreviewWindow

    wins = [
        w
        for w in QApplication.topLevelWidgets()
        if isinstance(w, PreviewWindow) and w.isVisible()
    ]
    return wins[0] if wins else None


def _windowed_run(
    tmp_path: Path,
    act: Callable[[Any, int], bool],
    *,
    keep_open: bool = True,
    on_finished: Callable[[Any], None] | None = None,
    frames: int = FRAMES,
    **options: Any,
) -> tuple[Any, list[int]]:
    """A windowed live run on the demo rig; ``act(window, pairs)`` is called every
    20 ms from the Qt event loop until it returns True.  Returns the summary and
    the pair counts seen when ``act`` acted."""
    from qtpy.QtCore import QTimer

    pairs: list[int] = []
    acted: list[int] = []

    give_up = time.monotonic() + 90  # a broken stop fails the test, never hangs it

    def tick() -> None:
        win = _preview_window()
        if win is not None and time.monotonic() > give_up:
            win.finished = True
            win.close()
        elif win is not None and not acted and act(win, len(pairs)):
            acted.append(len(pairs))

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 64)
        summary = run_live(
            rig,
            AcquisitionSettings(mode="triggered"),
            useq.MDASequence(time_plan={"interval": INTERVAL_S, "loops": frames}),
            options=LiveOptions(
                out=tmp_path,
                window=True,
                progress=False,
                keep_window_open=keep_open,
                on_finished=on_finished,
                **{"restore": False, **options},
            ),
            on_started=lambda acq, _r: acq.events.pairReady.connect(
                lambda p: pairs.append(p.index)
            ),
        )
    timer.stop()
    return summary, acted


def _kept(summary: Any) -> int:
    run_dir = Path(summary.run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    listed = len((run_dir / "pairs.jsonl").read_text().splitlines())
    assert info["pairs_written"] == listed == summary.pairs
    assert len(pairscope.open_run(run_dir)) == listed  # every pair readable
    return listed


def test_closing_the_window_stops_the_run_and_keeps_every_pair(
    qapp: Any, tmp_path: Path
) -> None:
    def close_after_5(win: Any, n: int) -> bool:
        if n >= 5:
            win.close()
            return True
        return False

    summary, acted = _windowed_run(tmp_path, close_after_5)
    assert acted, "the window never showed 5 pairs"
    assert summary.status == "cancelled"
    # stopped: only the frames the cameras had taken follow the close
    assert acted[0] <= summary.pairs <= acted[0] + STOPPED_WITHIN
    assert _kept(summary) == summary.pairs


def test_stop_button_stops_the_run_and_the_window_shows_finished(
    qapp: Any, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def click_stop_then_look(win: Any, n: int) -> bool:
        if n >= 5 and "clicked" not in seen:
            win.stop_button.click()
            seen["clicked"] = n
        if win.finished:  # the run ended and the window stayed open for looking
            win.refresh()
            seen["title"] = win.windowTitle()
            seen["button"] = win.stop_button.text()
            seen["status"] = win.status_label.text()
            win.close()
            return True
        return False

    def finished(summary: Any) -> None:  # the terminal's summary: before the close
        seen["window_open_at_summary"] = _preview_window() is not None

    summary, acted = _windowed_run(
        tmp_path, click_stop_then_look, keep_open=True, on_finished=finished
    )
    assert acted and summary.status == "cancelled"
    assert seen["clicked"] <= summary.pairs <= seen["clicked"] + STOPPED_WITHIN
    assert seen["window_open_at_summary"] is True
    assert "finished: cancelled" in seen["title"]
    assert seen["button"] == "Finished" and seen["status"].startswith("FINISHED")
    assert _kept(summary) == summary.pairs


@pytest.mark.slow  # trains a candidate; test_finetune checks the gate by default
def test_fine_tune_button_trains_a_candidate_during_the_run(
    qapp: Any, tmp_path: Path
) -> None:
    from pairscope.finetune import FineTuneOptions

    from .test_finetune import KEYS, _weak_model

    def click_at_30(win: Any, n: int) -> bool:
        if n >= 30:
            assert win.fine_tune_button.isEnabled()
            return win.request_fine_tune()
        return False

    summary, acted = _windowed_run(
        tmp_path / "runs",
        click_at_30,
        keep_open=False,
        frames=60,
        restore=True,
        model=_weak_model(tmp_path / "weak.safetensors"),
        fine_tune=FineTuneOptions(  # never on its own: only the button starts one
            every=10_000, holdback=4, epochs=2, samples_per_epoch=32, crop=48, nice=0
        ),
    )
    assert acted, "the button never started a candidate"
    assert summary.status == "completed" and _kept(summary) == 60
    lines = (Path(summary.run_dir) / "finetune.jsonl").read_text().splitlines()
    assert len(lines) == 1
    decision = json.loads(lines[0])
    assert set(decision) >= KEYS and decision["pairs_trained_on"] <= acted[0]


def test_sigint_to_a_windowed_cli_run_stops_it_cleanly(tmp_path: Path) -> None:
    """Ctrl-C in the terminal of a run whose window is open (offscreen Qt)."""
    proc, out, err, manifest = interrupted_demo(
        tmp_path,
        signal.SIGINT,
        "--interval-ms",
        "50",  # the demo's 50 ms reference exposure can keep it
        "--window",
        env={"QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.returncode == 130, err
    assert "headless" not in err  # it really ran with the window
    assert_cancelled_cleanly(out, err, manifest)


# -- what the window shows ---------------------------------------------------------
@pytest.fixture
def window(qapp: Any) -> Any:
    from pairscope.preview import PreviewWindow

    win = PreviewWindow()
    win.show()
    qapp.processEvents()
    yield win
    win.finished = True  # a bare window: closing it stops nothing
    win.close()
    win.deleteLater()
    qapp.processEvents()


def _pair(index: int) -> Any:
    from pairscope.acquire import Pair

    rng = np.random.default_rng(index)
    ref = rng.poisson(rng.uniform(100, 3000, (128, 128))).astype(np.uint16)
    low = (ref.reshape(64, 2, 64, 2).sum(axis=(1, 3)) // 40).astype(np.uint16)
    return Pair(index, low, ref)


def _restored(index: int) -> Any:
    from pairscope.restore import RestoredFrame

    img = _pair(index).reference.astype(np.float32) * 1.1
    return RestoredFrame(index, img, 10.0, "m", "0" * 64)


def _show(win: Any, qapp: Any, index: int = 3) -> None:
    win.on_pair(_pair(index))
    win.on_restored(_restored(index))
    win._shown = (-1, -1, -1)
    win.refresh()
    qapp.processEvents()


def test_contrast_is_per_panel_and_can_be_linked(window: Any, qapp: Any) -> None:
    _show(window, qapp)
    auto = [p.limits for p in window.panels]
    window.contrast_panel.setCurrentIndex(0)  # the low-dose panel
    window.auto_contrast.setChecked(False)
    window.min_spin.setValue(0.0)
    window.max_spin.setValue(20.0)
    _show(window, qapp)
    limits = [p.limits for p in window.panels]
    assert limits[0] == (0.0, 20.0)
    assert limits[1] == auto[1] and limits[2] == auto[2]  # the others stay automatic
    window.link_contrast.setChecked(True)  # the three intensity panels share one range
    _show(window, qapp)
    limits = [p.limits for p in window.panels]
    assert limits[0] == limits[1] == limits[2] == (0.0, 20.0)
    assert limits[3] == auto[3]  # the signed difference keeps its own
    window.contrast_panel.setCurrentIndex(3)
    assert window.auto_contrast.isChecked()  # the control shows that panel's state


def test_scale_bar_and_signed_colour_bar(window: Any, qapp: Any) -> None:
    from pairscope.preview._window import nice_length_um

    assert [nice_length_um(v) for v in (0.7, 2.4, 6.0, 13.0)] == [0.5, 2.0, 5.0, 10.0]
    window.pixel_size_um = 0.1
    _show(window, qapp)
    bar = window.views[1]
    assert bar.scale_bar.isVisible()
    um = float(bar.scale_text.text().split()[0])
    assert bar.scale_text.text().endswith("µm")
    assert bar.scale_bar.rect().width() == pytest.approx(um / 0.1)  # in pixels
    lo, hi = window.panels[3].limits
    assert lo == pytest.approx(-hi) and hi > 0  # symmetric about zero
    assert (
        "blue" in window.diff_bar_text.text() and "red" in window.diff_bar_text.text()
    )
    window.pixel_size_um = None  # no pixel size known: no bar rather than a wrong one
    _show(window, qapp)
    assert not window.views[1].scale_bar.isVisible()


def test_panels_rendered_off_the_gui_thread_show_the_newest_pair(
    window: Any, qapp: Any
) -> None:
    window.render_async = True
    for i in range(10):
        window.on_pair(_pair(i))
        window.on_restored(_restored(i))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        qapp.processEvents()
        window.refresh()
        if window.panels and window.panels[2].pixels is not None:
            ref = _pair(9).reference
            from pairscope.preview import auto_limits, to_uint8

            if np.array_equal(window.panels[2].pixels, to_uint8(ref, auto_limits(ref))):
                break
        time.sleep(0.01)
    else:
        pytest.fail("the newest pair was never shown")


def test_a_closed_window_still_shows_the_newest_pair_when_refreshed(
    window: Any, qapp: Any
) -> None:
    """After the run's window closed (its render thread gone), a refresh (the
    final snapshot) renders the newest pair here instead of raising."""
    window.render_async = True
    _show(window, qapp, 1)  # starts the render thread
    window.finished = True
    window.close()
    _show(window, qapp, 7)
    ref = _pair(7).reference
    from pairscope.preview import auto_limits, to_uint8

    assert np.array_equal(window.panels[2].pixels, to_uint8(ref, auto_limits(ref)))


def test_window_fits_a_1280x720_screen(window: Any, qapp: Any) -> None:
    window.resize(1280, 680)  # a 720-line screen minus the title bar
    _show(window, qapp)
    hint = window.minimumSizeHint()
    assert hint.width() <= 1280 and hint.height() <= 680
    for w in (window.stop_button, window.auto_contrast, window.status_label):
        top_left = w.mapTo(window, w.rect().topLeft())
        assert top_left.y() >= 0 and top_left.y() + w.height() <= window.height()
        assert top_left.x() + w.width() <= window.width()
