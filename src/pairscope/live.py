"""A live session: paired acquisition + writer, with restoration and preview on top.

Acquisition never waits for the restorer or the preview: the restorer catches up
on the frames waiting for it within a bound and skips the rest (counted); only the
writer may apply back-pressure, and it never drops data.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pymmcore_plus import CMMCorePlus
from tqdm import tqdm
from useq import MDASequence

from ._files import os_reason
from ._progress import progress as progress_bar
from ._threads import deprioritize_current_thread
from .acquire import AcquisitionSummary, PairedAcquisition
from .config import AcquisitionSettings, PairingMode
from .hardware import Rig
from .io import PredictionWriter, RunWriter

logger = logging.getLogger(__name__)
#: modes whose pairs are of one instant: the live registration comes from them
_SAME_INSTANT_MODES = (
    PairingMode.TRIGGERED,
    PairingMode.SIMULTANEOUS,
    PairingMode.MULTI_CAMERA,
)
MODELS_DIR = Path(__file__).parent / "models"
#: headless snapshots every 25 pairs, but no more often than this (s): drawing one
#: costs ~0.6 s of CPU, a quarter of a core at 10 pairs/s every 25 pairs
HEADLESS_SNAPSHOT_MIN_S = 5.0


def bundled_model_path(factor: int) -> Path | None:
    """The demo model shipped with pairscope for this binning factor, if any."""
    path = MODELS_DIR / f"demo_x{factor}.safetensors"
    return path if path.is_file() else None


def _interval(trust: Any, image: Any) -> Any:
    """The trust monitor's calibrated interval of a restored frame (None before)."""
    intervals = getattr(trust, "intervals", None)
    return None if intervals is None else intervals.interval(image)


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM", "") in ("offscreen", "minimal"):
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass(frozen=True)
class LiveOptions:
    """How a live session shows and keeps its results."""

    out: Path = Path("pairscope_runs")
    format: str = "ome-tiff"  # or "ome-zarr"
    headless: bool = False
    restore: bool = True
    model: Path | None = None  # None: the bundled demo model for the binning
    save_restored: bool = False
    alpha: float = 0.1  # risk level of the trust monitor's per-pixel intervals
    progress: bool = True
    window: bool | None = None  # None: a window where there is a display
    keep_window_open: bool = True  # after the run, until the user closes it
    announce: Callable[[str], None] | None = None  # one-line notes for the user
    fine_tune: Any = None  # a FineTuneOptions: fine-tune during the run
    #: called with the summary as soon as the acquisition ends (the window may stay)
    on_finished: Callable[[AcquisitionSummary], None] | None = None


def run_live(
    rig: Rig | CMMCorePlus,
    settings: AcquisitionSettings,
    sequence: MDASequence,
    *,
    config_path: str | Path | None = None,
    options: LiveOptions | None = None,
    restorer: Any | None = None,
    on_started: Callable[[PairedAcquisition, Any], None] | None = None,
    extra_info: dict[str, Any] | None = None,
) -> AcquisitionSummary:
    """Run ``sequence`` with writing, progress, live restoration and preview.

    ``restorer``: a ready :class:`~pairscope.restore.StreamingRestorer` to use
    instead of loading ``options.model``.  ``on_started(acquisition, restorer)``
    is called before the first trigger (to connect more listeners).
    """
    options = options or LiveOptions()
    acq = PairedAcquisition(rig, settings, config_path=config_path)
    acq.check(sequence)  # a sequence the rig cannot run: one line, no folder, no window
    acq.extra_info.update(extra_info or {})
    model_path = options.model or bundled_model_path(acq.detectors.factor)
    if restorer is None and options.restore:
        restorer = _load_restorer(acq, options.model, sequence)
    writer = RunWriter(options.out, format=options.format)
    predictions = None
    trust: Any = None  # the trust monitor (below): its intervals go with predictions
    if restorer is not None:

        def _restore(pair: Any) -> None:
            if pair.lowdose is not None:
                restorer.submit(pair.index, pair.lowdose)

        acq.events.pairReady.connect(_restore)
        if options.save_restored:  # with each frame's interval once calibrated
            predictions = PredictionWriter(
                writer.run_dir, intervals=lambda image: _interval(trust, image)
            )
            restorer.events.restored.connect(predictions.on_restored)
    say = options.announce or logger.info
    headless = options.headless or (options.window is None and not has_display())
    if not headless and (problem := qt_start_problem()):
        say(f"no window: Qt cannot start here ({problem}); running headless")
        headless = True
    if headless:
        say(f"headless preview: snapshots in {writer.run_dir / 'preview'}")
    try:
        sink = _make_sink(headless, writer.run_dir)
    except Exception:
        writer.discard_if_empty()  # a failed start leaves no empty run folder
        raise
    if headless:
        sink.pixel_size_um = acq.detectors.reference_pixel_um  # for the scale bar
    from .preview import connect_preview

    link = connect_preview(sink, acquisition_events=acq.events, restorer=restorer)
    calibration = None  # one camera registration: preview, trust and fine-tuning
    if acq.detectors.mode is not PairingMode.ALTERNATING:
        calibration = _LiveCalibration(sink, writer.run_dir, acq.detectors.factor)
        acq.events.pairReady.connect(calibration.on_pair)
    if restorer is not None:  # checks every restored pair: quality.jsonl (issue 9)
        from .trust import attach_trust_monitor

        trust = attach_trust_monitor(
            acq.events,
            restorer,
            writer.run_dir,
            sink=sink,
            # the run's one registration where its pairs are of one instant
            registration=calibration.wait
            if calibration is not None and acq.detectors.mode in _SAME_INSTANT_MODES
            else None,
            alpha=options.alpha,
        )
    tuner = None
    if options.fine_tune is not None and restorer is not None and model_path:
        from .finetune import LiveFineTuner

        live_reg = calibration
        tuner = LiveFineTuner(
            writer.run_dir,
            restorer,
            model_path,
            options.fine_tune,
            registration=lambda timeout: live_reg.wait(timeout) if live_reg else None,
        )
        acq.events.pairReady.connect(tuner.on_pair)
    bar = _progress(acq, sequence) if options.progress else None
    calls_before = acq.cancel_calls
    if on_started is not None:
        on_started(acq, restorer)
    if restorer is not None:
        restorer.start()
    try:
        if headless:
            summary = acq.run(sequence, writer=writer)
            # the summary comes once the live work is done (below), so no thread
            # outlives it; meanwhile say what is being finished
            say(f"run {summary.status}; finishing the live checks and the preview")
        else:
            summary = _run_with_window(
                acq,
                sequence,
                writer,
                sink,
                keep_open=options.keep_window_open,
                on_finished=options.on_finished,
                fine_tune=tuner.request if tuner is not None else None,
            )
    finally:
        if tuner is not None:  # the candidate in training finishes (or is stopped)
            calls_at_end = acq.cancel_calls
            tuner.finish(
                cancelled=calls_at_end > calls_before,
                interrupted=lambda: acq.cancel_calls > calls_at_end,
            )
        if restorer is not None:
            restorer.stop(finish_waiting=True)  # the last pair gets its check too
        if trust is not None:
            checks = trust.finish()
            if checks.skipped:  # the checks could not keep up: say how many
                say(
                    f"{checks.line()}: newer pairs came while they waited (every "
                    "pair is on disk; `pairscope evaluate` checks them all)"
                )
        if calibration is not None:
            calibration.finish()
        link.disconnect()  # pushes the final status
        if predictions is not None:
            predictions.close()
        if bar is not None:
            bar.close()
        if headless:
            sink.close()
    if headless and options.on_finished is not None:
        options.on_finished(summary)
    return summary


def _load_restorer(
    acq: PairedAcquisition, model: Path | None, sequence: MDASequence | None = None
) -> Any:
    """The restorer of ``model`` (else the bundled one), checked against the rig
    model this run will record (:func:`pairscope.restore.check_model_for_rig`):
    refused for another factor or pixel size, each warning logged once."""
    from .restore import StreamingRestorer, load_model, log_rig_check
    from .rig import RigModel

    factor = acq.detectors.factor
    path = model or bundled_model_path(factor)
    if path is None:
        logger.warning(
            "No restoration model for binning %d is bundled; running without live "
            "restoration. Train one (pairscope train) and pass --model.",
            factor,
        )
        return None
    if sequence is None:
        pixel = acq.detectors.lowdose_pixel_um
        loaded = load_model(path, expect_factor=factor, expect_pixel_size_um=pixel)
    else:
        loaded = load_model(path)
        rig = RigModel.model_validate(acq.run_info(sequence)["rig_model"])
        lines = log_rig_check(loaded.info, rig, path=path, log=logger.warning)
        restorer = StreamingRestorer(loaded)
        restorer.rig_warnings = tuple(lines)  # said: fine-tuning does not repeat them
        return restorer
    return StreamingRestorer(loaded)


class _LiveCalibration:
    """Register the cameras from the first pairs, on a low-priority thread.

    Restored frames live in the low-dose camera's frame; once the registration is
    known the preview shows the reference (and restored − reference) in that frame,
    and the run folder gets its ``calibration.json`` (a shift-only estimate from 4
    pairs; ``pairscope calibrate RUN`` refits shift and scale on more pairs).
    """

    def __init__(self, sink: Any, run_dir: Path, factor: int, n_pairs: int = 4) -> None:
        self.sink, self.run_dir, self.factor, self.n_pairs = (
            sink,
            run_dir,
            factor,
            n_pairs,
        )
        self.pairs: list[tuple[Any, Any]] = []
        self.registration: Any = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()  # the estimate is under way

    def on_pair(self, pair: Any) -> None:  # acquisition thread: keep references only
        if self._thread is not None or not pair.metadata.get("simultaneous"):
            return  # only frames of one instant say how the cameras are registered
        self.pairs.append((pair.lowdose, pair.reference))
        if len(self.pairs) >= self.n_pairs:
            self._thread = threading.Thread(
                target=self._estimate, name="pairscope-calibration", daemon=True
            )
            self._thread.start()
            self._started.set()

    def _estimate(self) -> None:
        from .io.calibration import apply_registration, registration_from_pairs

        deprioritize_current_thread(15)  # below the restorer: the preview comes first
        try:
            # shift only, on central crops: ~0.3 s of (GIL-holding) scipy work, so
            # the acquisition does not feel it; `pairscope calibrate` fits the scale
            pairs = [_central(a, b, self.factor) for a, b in self.pairs]
            reg = registration_from_pairs(pairs, self.factor, fit_scale=False)
        except ValueError as exc:  # nothing to register on: say why, once
            logger.warning("Live camera registration not possible: %s", exc)
            return
        except Exception:
            logger.warning("Live camera registration failed", exc_info=True)
            return
        self.registration = reg
        self.sink.reference_transform = partial(apply_registration, reg=reg)

    def wait(self, timeout: float) -> Any:
        """The registration, once estimated (waits up to ``timeout`` s for the 4
        same-instant pairs and the estimate); None if it has not come or failed."""
        deadline = time.monotonic() + timeout
        self._started.wait(timeout)
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.registration

    def finish(self, timeout: float = 120.0) -> None:
        """Wait for the estimate and store it with the run."""
        from .io.calibration import save_calibration

        if self._thread is None or self.wait(timeout) is None:
            return
        try:
            save_calibration(self.run_dir, self.registration)
        except OSError as exc:  # the folder turned read-only, full or removed
            logger.warning(
                "the live camera registration was not stored: %s; 'pairscope "
                "calibrate %s' stores one once the folder is writable",
                os_reason(exc),
                self.run_dir,
            )


def _central(low: Any, ref: Any, factor: int, size: int = 128) -> tuple[Any, Any]:
    """The central ``size``² of the reference and the matching low-dose crop (the
    registration is about the frame centre, so a central crop gives the same answer
    at a fraction of the work)."""
    h, w = low.shape
    n = min(size // factor, h, w)
    y0, x0 = (h - n) // 2, (w - n) // 2
    crop_low = low[y0 : y0 + n, x0 : x0 + n]
    crop_ref = ref[y0 * factor : (y0 + n) * factor, x0 * factor : (x0 + n) * factor]
    return crop_low.astype(np.float32), crop_ref.astype(np.float32)


def qt_start_problem(timeout_s: float = 30.0) -> str:
    """Why Qt cannot open a window here ('' if it can), probed in a subprocess:
    a missing platform plugin or a dead display aborts the process that tries."""
    import subprocess

    code = (
        "import sys\nfrom qtpy.QtWidgets import QApplication\n"
        "app = QApplication(sys.argv[:1])\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the Qt check failed: {exc}"
    if proc.returncode == 0:
        return ""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    qt_lines = [ln for ln in lines if "qt." in ln.lower() or "plugin" in ln.lower()]
    return (qt_lines or lines or [f"exit code {proc.returncode}"])[0][:200]


def _make_sink(headless: bool, run_dir: Path) -> Any:
    from . import preview

    if headless:
        return preview.HeadlessPreview(
            run_dir / "preview", min_interval_s=HEADLESS_SNAPSHOT_MIN_S
        )
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = preview.PreviewWindow()
    window._app_ref = app  # keep the application alive with the window
    return window


def _progress(acq: PairedAcquisition, sequence: MDASequence) -> tqdm:
    bar = progress_bar(
        total=sum(1 for _ in sequence.iter_events()),
        unit="pair",
        desc="paired acquisition",
    )
    acq.events.pairReady.connect(lambda _: bar.update(1))
    return bar


def _run_with_window(
    acq: PairedAcquisition,
    sequence: MDASequence,
    writer: RunWriter,
    window: Any,
    *,
    keep_open: bool = True,
    on_finished: Callable[[AcquisitionSummary], None] | None = None,
    fine_tune: Callable[[], bool] | None = None,
) -> AcquisitionSummary:
    """Acquire on a thread while Qt runs the window (``fine_tune``: its button).

    Closing the window, its Stop button or :meth:`PairedAcquisition.cancel` (Ctrl-C)
    stop the run after the current frame.  When the run ends the window shows
    "finished", ``on_finished`` gets the summary at once, and with ``keep_open``
    the window stays up for looking until the user closes it (or presses Ctrl-C).
    """
    from qtpy.QtCore import QTimer

    app = window._app_ref
    window.setWindowTitle("pairscope — live paired acquisition")
    window.render_async = True  # panels are rendered off the GUI thread
    window.pixel_size_um = acq.detectors.reference_pixel_um
    own_stops = [0]  # cancels from the window itself (Stop button, closing)

    def stop_from_window() -> None:
        own_stops[0] += 1
        acq.cancel()  # after the current frame

    window.on_stop = stop_from_window
    if fine_tune is not None:
        window.enable_fine_tune(fine_tune)
    window.show()
    thread, result = acq.run_in_thread(sequence, writer=writer)
    announced: list[bool] = []

    def _poll() -> None:
        if thread.is_alive():
            hidden = not window.isVisible() or window.stop_requested
            if hidden and not own_stops[0]:  # hidden without a close event
                stop_from_window()
            return
        if not announced and result:
            announced.append(True)
            s = result[0]
            window.set_finished(f"{s.status}, {s.pairs}/{s.expected_pairs} pairs")
            if on_finished is not None:
                on_finished(s)
        stopped_elsewhere = acq.cancel_calls > own_stops[0]  # Ctrl-C, SIGTERM
        if not keep_open or not window.isVisible() or stopped_elsewhere:
            window.close()
            app.quit()

    timer = QTimer()
    timer.timeout.connect(_poll)
    timer.start(100)
    app.exec()
    timer.stop()
    thread.join()
    return result[0]
