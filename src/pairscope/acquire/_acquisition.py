"""Run a paired acquisition: engine + runner + writer, with faults made explicit."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pymmcore_plus import CMMCorePlus
from useq import MDASequence

from .. import __version__
from ..config import AcquisitionSettings
from ..errors import CameraFault, StageFault, WriterError
from ..hardware import DetectorPair, find_detector_pair
from ._engine import PairedEngine
from ._pair import Pair
from ._signals import PairedSignals

logger = logging.getLogger(__name__)

Status = Literal["completed", "canceled", "failed"]


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PairedAcquisition:
    """Paired low-dose / reference timelapse on any core (demo or real hardware).

    ``events.pairReady`` fires on the acquisition thread once per trigger; a writer
    passed to :meth:`run` receives every pair (back-pressure, never dropping).
    """

    def __init__(
        self,
        core: CMMCorePlus,
        settings: AcquisitionSettings | None = None,
        *,
        config_path: str | Path | None = None,
    ) -> None:
        self.core = core
        self.settings = settings or AcquisitionSettings()
        self.detectors: DetectorPair = find_detector_pair(core, self.settings)
        self.config_path = Path(config_path) if config_path else None
        self.events = PairedSignals()
        self._writer_error: WriterError | None = None

    def run_info(self, sequence: MDASequence) -> dict[str, Any]:
        """Everything a run folder records about how it was acquired."""
        cfg_hash = None
        if self.config_path and self.config_path.is_file():
            cfg_hash = hashlib.sha256(self.config_path.read_bytes()).hexdigest()
        return {
            "pairscope_version": __version__,
            "config_path": str(self.config_path) if self.config_path else None,
            "config_sha256": cfg_hash,
            "detectors": {
                "mode": self.detectors.mode.value,
                "lowdose": self.detectors.lowdose,
                "reference": self.detectors.reference,
                "factor": self.detectors.factor,
                "reasons": list(self.detectors.reasons),
            },
            "settings": self.settings.model_dump(mode="json"),
            "system_state": _system_state(self.core),
            "sequence": sequence.model_dump(mode="json", exclude_unset=True),
        }

    def run(
        self, sequence: MDASequence, *, writer: Any | None = None
    ) -> AcquisitionSummary:
        """Acquire ``sequence`` (blocking); never raises for camera or disk faults.

        A camera fault or a full disk stops the run; the summary says where, and
        every pair acquired before it is kept (and written, with a writer).
        """
        engine = PairedEngine(self.core, self.detectors, self.settings, self.events)
        previous_engine = self.core.mda.engine
        self.core.mda.set_engine(engine)
        self._writer_error = None
        info = self.run_info(sequence)
        if writer is not None:
            writer.start(info)
            to_writer = self._to_writer(writer)
            self.events.pairReady.connect(to_writer)
        self.events.started.emit(info)
        status: Status = "completed"
        failed_trigger, message = None, ""
        t0 = time.perf_counter()
        try:
            self.core.mda.run(sequence)
        except (CameraFault, StageFault) as fault:
            status, failed_trigger, message = "failed", fault.trigger_index, str(fault)
        except Exception as exc:  # any other device error: stop, keep the data, say so
            logger.exception("Acquisition stopped by an error")
            status, failed_trigger = "failed", engine.pairs_emitted
            message = (
                f"Acquisition stopped at trigger {failed_trigger} by {exc!r}; every "
                "earlier pair is saved. Check the device named above and start a new run."
            )
        finally:
            if previous_engine is not None:
                self.core.mda.set_engine(previous_engine)
        elapsed = time.perf_counter() - t0
        if status == "completed" and self.core.mda.status.finish_reason == "canceled":
            status = "canceled"
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
        )
        if writer is not None:
            self.events.pairReady.disconnect(to_writer)  # the user's listeners stay
            summary = _finish_writer(writer, summary)
        if message:
            self.events.error.emit(summary.message)
        self.events.finished.emit(summary)
        return summary

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
        self.core.mda.cancel()

    def set_paused(self, paused: bool) -> None:
        self.core.mda.set_paused(paused)

    def _to_writer(self, writer: Any):
        def submit(pair: Pair) -> None:
            if self._writer_error is not None:
                return
            try:
                writer.submit(pair)
            except WriterError as err:
                self._writer_error = err
                logger.error("%s", err)
                self.core.mda.cancel()

        return submit


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


def _system_state(core: CMMCorePlus) -> dict[str, dict[str, str]]:
    """Every device property at the start of the run (the full hardware state)."""
    try:
        return core.getSystemState().dict()
    except Exception:  # a device that cannot report must not stop the run
        logger.warning("Could not read the system state", exc_info=True)
        return {}


def _count_events(sequence: MDASequence) -> int:
    try:
        return sum(1 for _ in sequence.iter_events())
    except Exception:
        return -1
