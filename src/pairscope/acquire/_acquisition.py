"""Run a paired acquisition: engine + runner + writer, with faults made explicit."""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pymmcore_plus import CMMCorePlus
from useq import MDASequence

from .. import __version__
from ..config import AcquisitionSettings
from ..errors import (
    CameraFault,
    ConfigError,
    SequenceOverflow,
    SettingsError,
    StageFault,
    WriterError,
)
from ..hardware import DetectorPair, Rig, find_detector_pair
from ..sequence import check_sequence
from ._engine import PairedEngine
from ._pair import Pair
from ._rig_model import rig_model_at_start
from ._signals import PairedSignals, listener_failures

logger = logging.getLogger(__name__)

Status = Literal["completed", "incomplete", "cancelled", "failed", "overflow"]


@dataclass(frozen=True, slots=True)
class AcquisitionSummary:
    """How a run ended, in numbers."""

    status: Status
    expected_pairs: int
    pairs: int
    incomplete_pairs: int
    elapsed_s: float
    pairs_per_s: float
    failed_trigger: int | None = None
    message: str = ""
    run_dir: str | None = None
    simultaneous_pairs: int = 0
    problems: tuple[str, ...] = ()
    listener_failures: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PairedAcquisition:
    """Paired low-dose / reference timelapse on a rig (demo or real hardware).

    ``rig``: a :class:`~pairscope.hardware.Rig` (one core per camera) or a single
    core.  A writer passed to :meth:`run` receives every pair first (back-pressure,
    never dropping); then ``events.pairReady`` fires on the acquisition thread,
    each listener isolated from the others.
    """

    def __init__(
        self,
        rig: Rig | CMMCorePlus,
        settings: AcquisitionSettings | None = None,
        *,
        config_path: str | Path | None = None,
    ) -> None:
        self.rig = rig if isinstance(rig, Rig) else Rig.from_core(rig, config_path)
        self.core = self.rig.primary.core
        self.settings = settings or AcquisitionSettings()
        self.detectors: DetectorPair = find_detector_pair(self.rig, self.settings)
        self.config_path = Path(config_path) if config_path else self.rig.path
        self.events = PairedSignals()
        self._writer_error: WriterError | None = None
        self._engine: PairedEngine | None = None
        self.extra_info: dict[str, Any] = {}  # recorded in run.json (e.g. a drill)

    def run_info(self, sequence: MDASequence) -> dict[str, Any]:
        """Everything a run folder records about how it was acquired."""
        cfg_hash = None
        if self.config_path and self.config_path.is_file():
            cfg_hash = hashlib.sha256(self.config_path.read_bytes()).hexdigest()
        info = {
            "pairscope_version": __version__,
            "config_path": str(self.config_path) if self.config_path else None,
            "config_sha256": cfg_hash,
            "rig": self.rig.describe(),
            "detectors": self.detectors.describe(),
            "settings": self.settings.model_dump(mode="json"),
            "system_state": _system_state(self.rig),
            "sequence": sequence.model_dump(mode="json", exclude_unset=True),
            "follower_free_running": engine_follower_free_runs(self),
            **self.extra_info,
        }
        info["rig_model"] = rig_model_at_start(self.rig, info).to_json()
        return info

    def run(
        self, sequence: MDASequence, *, writer: Any | None = None
    ) -> AcquisitionSummary:
        """Acquire ``sequence`` (blocking); never raises for camera or disk faults.

        A camera fault or a full disk stops the run; the summary says where, and
        every pair acquired before it is kept (and written, with a writer).
        """
        deliver = self._deliverer(writer)
        engine = PairedEngine(self.rig, self.detectors, self.settings, deliver)
        try:
            self.check(sequence)
        except (ConfigError, SettingsError):
            if writer is not None and hasattr(writer, "discard_unstarted"):
                writer.discard_unstarted()  # a refused start leaves no folder
            raise
        self._engine = engine
        previous_engine = self.core.mda.engine
        self.core.mda.set_engine(engine)
        self._writer_error = None
        info = self.run_info(sequence)
        if writer is not None:
            writer.start(info)
        self.events.started.emit(info)
        for notice in engine.free_running_notice():
            logger.warning("%s", notice)
        status: Status = "completed"
        failed_trigger, message = None, ""
        t0 = time.perf_counter()
        if self._cancel_before_start:
            engine.cancel_requested.set()
            self._cancel_before_start = False
        try:
            with self._ctrl_c_cancels():
                if not engine.cancel_requested.is_set():
                    self.core.mda.run(sequence)
        except (CameraFault, StageFault) as fault:
            status, failed_trigger, message = "failed", fault.trigger_index, str(fault)
        except SequenceOverflow as fault:
            status, failed_trigger = "overflow", engine.pairs_emitted
            message = str(fault)
        except Exception as exc:  # any other device error: stop, keep the data, say so
            logger.debug("Acquisition stopped by an error", exc_info=True)
            status, failed_trigger = "failed", engine.pairs_emitted
            reason = " ".join(str(exc).split()) or type(exc).__name__
            message = (
                f"Acquisition stopped at trigger {failed_trigger}: {reason} "
                f"({type(exc).__name__}); every earlier pair is saved. Check that "
                "device and start a new run."
            )
        finally:
            if previous_engine is not None:
                self.core.mda.set_engine(previous_engine)
            self._engine = None  # a cancel from now on is for the next run
        elapsed = time.perf_counter() - t0
        if status == "completed" and (
            self.core.mda.status.finish_reason == "canceled"
            or engine.cancel_requested.is_set()
        ):
            status = "cancelled"
        if status == "completed" and engine.short_cameras:
            status = "incomplete"
            message = "; ".join(
                f"camera {label!r} delivered {got} of {asked} frames"
                for label, (got, asked) in engine.short_cameras.items()
            ) + (
                "; every frame is saved, those without a partner marked partner_missing"
            )
        if self._writer_error is not None:
            status, message = "failed", str(self._writer_error)
        summary = AcquisitionSummary(
            status=status,
            expected_pairs=_count_events(sequence),
            pairs=engine.pairs_emitted,
            incomplete_pairs=engine.incomplete,
            elapsed_s=round(elapsed, 3),
            pairs_per_s=round(engine.pairs_emitted / elapsed, 3) if elapsed else 0.0,
            failed_trigger=failed_trigger,
            message=message,
            run_dir=str(writer.run_dir) if writer is not None else None,
            simultaneous_pairs=self._simultaneous,
            problems=tuple(engine.problems),
            listener_failures=listener_failures(self.events) or None,
        )
        if writer is not None:
            summary = _finish_writer(writer, summary)
        if message:
            self.events.error.emit(summary.message)
        self.events.finished.emit(summary)
        return summary

    def check(self, sequence: MDASequence) -> None:
        """Refuse, before anything starts, a sequence this rig cannot run as asked
        (no events, positions out of range, an interval shorter than the
        exposures): :class:`~pairscope.errors.SettingsError` or ``ConfigError``."""
        check_sequence(sequence)
        PairedEngine(self.rig, self.detectors, self.settings, print).check_timing(
            sequence
        )

    def run_in_thread(
        self, sequence: MDASequence, *, writer: Any | None = None
    ) -> tuple[threading.Thread, list[AcquisitionSummary]]:
        """Start :meth:`run` on a thread; the list receives the summary at the end."""
        result: list[AcquisitionSummary] = []
        thread = threading.Thread(
            target=lambda: result.append(self.run(sequence, writer=writer)),
            name="pairscope-acquisition",
            daemon=True,
        )
        thread.start()
        return thread, result

    def cancel(self) -> None:
        """Stop after the current frame (a running hardware sequence stops too)."""
        self.cancel_calls += 1
        self._cancel_before_start = self._engine is None
        if self._engine is not None:
            self._engine.cancel_requested.set()
        self.core.mda.cancel()

    #: how often :meth:`cancel` was called (also after the run ended: a live
    #: window that stays open closes on a Ctrl-C that is not its own Stop)
    cancel_calls = 0
    #: a cancel that came before :meth:`run` started its engine (a Ctrl-C while
    #: the rig was being set up): the run starts, acquires nothing, is 'cancelled'
    _cancel_before_start = False

    @contextmanager
    def _ctrl_c_cancels(self) -> Iterator[None]:
        """Ctrl-C during :meth:`run` (Python API, main thread) stops the run after
        the current frame, as the CLI does, instead of a KeyboardInterrupt through
        pymmcore-plus's runner (which leaves it 'running', its sequences going and
        the pairs in flight unwritten).  A handler someone else installed (the
        CLI's) is left alone."""
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):
            yield
            return

        def stop(signum: int, frame: Any) -> None:
            logger.warning(
                "Ctrl-C: stopping after the current frame; every pair is kept"
            )
            self.cancel()

        signal.signal(signal.SIGINT, stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def set_paused(self, paused: bool) -> None:
        self.core.mda.set_paused(paused)

    _simultaneous = 0

    def _deliverer(self, writer: Any | None) -> Callable[[Pair], None]:
        """Each pair goes to the writer first, then to the (isolated) listeners."""
        self._simultaneous = 0

        def deliver(pair: Pair) -> None:
            if pair.metadata.get("simultaneous"):
                self._simultaneous += 1
            if writer is not None and self._writer_error is None:
                try:
                    writer.submit(pair)
                except WriterError as err:
                    self._writer_error = err
                    logger.error("%s", err)
                    self.cancel()
            problem = pair.metadata.get("partner_missing")
            if problem:
                self.events.pairIncomplete.emit(pair, problem)
            self.events.pairReady.emit(pair)

        return deliver


def engine_follower_free_runs(acq: PairedAcquisition) -> bool:
    """Whether the run's followers free-run (triggered mode, no trigger input)."""
    engine = acq._engine
    return bool(engine is not None and engine.follower_free_runs)


def _finish_writer(writer: Any, summary: AcquisitionSummary) -> AcquisitionSummary:
    from dataclasses import replace

    try:
        written = writer.close(summary.to_dict())
    except WriterError as err:
        return replace(summary, status="failed", message=str(err))
    if written != summary.pairs and summary.status != "failed":
        return replace(
            summary,
            status="failed",
            message=f"Only {written} of {summary.pairs} pairs reached the disk.",
        )
    return summary


def _system_state(rig: Rig) -> dict[str, dict[str, str]]:
    """Every device property of every core at the start of the run."""
    state: dict[str, dict[str, str]] = {}
    for rc in reversed(rig.cores):  # the primary core's 'Core' entry wins
        try:
            # native=False (the default) gives pymmcore-plus's Configuration, which
            # has .dict(); getSystemState's stub lacks the overload saying so
            state.update(rc.core.getSystemState().dict())  # type: ignore[attr-defined]
        except Exception:  # a device that cannot report must not stop the run
            logger.warning(
                "Could not read the state of core %s", rc.name, exc_info=True
            )
    return state


def _count_events(sequence: MDASequence) -> int:
    try:
        return sum(1 for _ in sequence.iter_events())
    except Exception:
        return -1
