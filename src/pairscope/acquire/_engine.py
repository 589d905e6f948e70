"""The paired engine: ``useq`` events in, pairs of what the cameras said out.

A subclass of pymmcore-plus's ``MDAEngine`` on the rig's primary core (stages,
focus, channels and properties of an event are the stock engine's).  How a pair
is taken depends on the mode, all through the public core API:

- ``triggered``: runs of consecutive timepoints become one hardware-timed sequence
  on every core (followers armed first), paired by the cameras' image numbers and
  checked by their timestamps (see ``_sequence``);
- ``simultaneous`` / ``sparse`` on a rig: every core snaps at once from its own
  thread; ``sequential`` / ``sparse`` on one core: one camera after the other;
- ``multi-camera``: one core's Multi Camera device runs a sequence;
- ``alternating``: one camera, binned then unbinned.

Every frame records what its camera said (``FrameRecord``) and every pair whether
the exposures overlapped (``simultaneous``).  A frame that lost its partner is
delivered alone, marked, never dropped.  Pairs go to ``deliver`` (the writer
first, then listeners) on the acquisition thread; frames are also yielded to the
runner as pymmcore-plus ``frameReady`` payloads (``FrameMetaV1``, ``"cam"`` index).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.core._sequencing import SequencedEvent
from pymmcore_plus.mda import MDAEngine
from pymmcore_plus.mda._engine import ImagePayload
from pymmcore_plus.metadata import frame_metadata
from useq import MDAEvent, MDASequence

from ..config import AcquisitionSettings, PairingMode
from ..errors import CameraFault, ConfigError, SequenceOverflow, StageFault
from ..hardware import DetectorPair, Rig, camera_binning
from ..io import same_trigger
from ._pair import Pair, PairMetadata
from ._pairing import FramePairer, StreamFrame
from ._rig_state import RigState
from ._sequence import (
    STOP_MARGIN_S,
    CameraStream,
    camera_stopped_message,
    camera_thread_errors,
    drain,
    start_sequence,
    stopped_camera,
)
from ._snaps import ParallelSnapper, camera_fault, snapped_record
from ._timing import FrameRecord, RunClock, overlap_ms, simultaneous

logger = logging.getLogger(__name__)
ROLE_CAM = {"lowdose": 0, "reference": 1}
#: how long a hardware sequence's loop waits when no frame came (the frames wait
#: in the cores' buffers; each look costs every core a call)
POLL_S = 0.002


class PairedEngine(MDAEngine):
    """Acquire pairs per ``useq`` event on a rig; hand each to ``deliver``."""

    def __init__(
        self,
        rig: Rig,
        detectors: DetectorPair,
        settings: AcquisitionSettings,
        deliver: Callable[[Pair], None],
    ) -> None:
        super().__init__(rig.primary.core, use_hardware_sequencing=False)
        self.rig = rig
        self.detectors = detectors
        self.settings = settings
        self.deliver = deliver
        self.pairs_emitted = 0
        self.incomplete = 0
        self.problems: list[str] = []
        self.cancel_requested = threading.Event()
        self.clock = RunClock()
        self._trigger = 0
        self._static: dict[str, Any] = {}
        self._stage: tuple[float | None, float | None, float | None] = (None,) * 3
        self._snapper: ParallelSnapper | None = None
        self._one_snapper: ParallelSnapper | None = None  # one camera, with a timeout
        self._rig_state: RigState | None = None
        self._burst: _BurstState | None = None
        self._active: Iterator[Any] | None = None  # the burst being run
        self._leftover: list[MDAEvent] = []  # a paused burst's events still to take
        self._pause_requested = False
        self._runner_t0: float | None = None
        #: cameras that delivered fewer frames than asked: label -> (got, asked)
        self.short_cameras: dict[str, tuple[int, int]] = {}
        #: the low-dose camera's unbinned pixel size, fixed as the run starts (its
        #: detected size is at the binning then): a binning changed mid-run scales
        #: the recorded pixel size, it does not change the sensor
        low_px = detectors.lowdose_pixel_um
        self._low_unbinned_um = (
            None
            if low_px is None
            else low_px
            / max(
                settings.binning
                or camera_binning(self._core("lowdose"), detectors.lowdose),
                1,
            )
        )

    # -- cores and cameras -----------------------------------------------------
    @property
    def mode(self) -> PairingMode:
        return self.detectors.mode

    def _core(self, role: str) -> CMMCorePlus:
        name = (
            self.detectors.lowdose_core
            if role == "lowdose"
            else self.detectors.reference_core
        )
        return self.rig.core_named(name).core if self.rig.multi_core else self.mmcore

    def _label(self, role: str) -> str:
        return self.detectors.lowdose if role == "lowdose" else self.detectors.reference

    # -- sequence --------------------------------------------------------------
    def setup_sequence(self, sequence: MDASequence) -> Any:
        self._refuse_unfit_writers()
        # every core's cameras, trigger modes and shutter, put back by teardown
        self._rig_state = RigState.capture(self.rig, self.detectors)
        meta = super().setup_sequence(sequence)
        s, d = self.settings, self.detectors
        if self.mode is not PairingMode.ALTERNATING:
            low_core, ref_core = self._core("lowdose"), self._core("reference")
            if s.binning is not None:
                low_core.setProperty(d.lowdose, "Binning", s.binning)
            if s.lowdose_exposure_ms:
                low_core.setExposure(d.lowdose, s.lowdose_exposure_ms)
            if s.reference_exposure_ms:
                ref_core.setExposure(d.reference, s.reference_exposure_ms)
        self._trigger = self.pairs_emitted = self.incomplete = 0
        self.problems = []
        self.short_cameras = {}
        self._leftover = []
        self._pause_requested = False
        self.clock = RunClock()
        self._static = {
            "split_ratio": s.split_ratio or self._split_ratio(),
            "light": light_power_property(self.mmcore),
        }
        self._stage = _stage_position(self.mmcore)
        if self.rig.multi_core and self.mode in (
            PairingMode.SIMULTANEOUS,
            PairingMode.SPARSE,
            # events that cannot form a hardware-timed burst (a stage position,
            # z or channel change every frame) are snapped on every core at once
            PairingMode.TRIGGERED,
        ):
            self._snapper = ParallelSnapper(2)
        if self.mode in (PairingMode.TRIGGERED, PairingMode.MULTI_CAMERA):
            self._size_buffers(sequence)
        return meta

    def _refuse_unfit_writers(self) -> None:
        """Refuse, before the first frame, a pymmcore-plus writer that would lose or
        misplace pairs.

        pymmcore-plus's writers (the ome-writers sink behind ``output="..."``,
        ``OMETiffWriter``, ``OMEZarrWriter``, ``TensorStoreHandler``,
        ``ImageSequenceWriter``) key frames by the sequence's axes, which have no
        camera axis, and hold one frame size per array: frames of a binned and an
        unbinned camera overwrite each other or are dropped with a logged error.
        Work-around (pymmcore-plus 0.18.1): the runner's sink and handlers are read
        from its private ``_sink`` / ``_handlers`` (its public accessor is
        deprecated).
        """
        runner = self.mmcore.mda
        unfit = []
        if getattr(runner, "_sink", None) is not None:
            unfit.append(
                f"the ome-writers sink ({type(runner._sink).__name__}, from output=...)"
            )
        for handler in list(getattr(runner, "_handlers", ())):
            if type(handler).__module__.startswith("pymmcore_plus.mda.handlers"):
                unfit.append(type(handler).__name__)
        if unfit:
            raise ConfigError(
                f"pymmcore-plus's {', '.join(unfit)} keys frames by the sequence's "
                "axes, which have no camera axis, and holds one frame size per "
                "array: the two cameras' frames would overwrite each other. Write "
                "pairs with pairscope (PairedAcquisition.run(sequence, writer="
                "RunWriter(folder)) or 'pairscope acquire'), or pass your own "
                "handler with a frameReady(img, event, meta) method (each frame "
                "has its event.index['cam'])."
            )

    def teardown_sequence(self, sequence: MDASequence) -> None:
        self._close_active()
        for snapper in (self._snapper, self._one_snapper):
            if snapper is not None:
                snapper.close()
        self._snapper = self._one_snapper = None
        try:
            super().teardown_sequence(sequence)
        finally:
            if self._rig_state is not None:
                self._rig_state.restore()
                self._rig_state = None

    def teardown_event(self, event: MDAEvent) -> None:
        # a burst the runner stopped iterating (a sink or listener error) is
        # closed now: its sequences stop, the shutter closes, its frames are kept
        self._close_active()
        super().teardown_event(event)

    def _close_active(self) -> None:
        active, self._active = self._active, None
        if active is not None and hasattr(active, "close"):
            try:
                active.close()
            except Exception:  # closing must not hide why the run stopped
                logger.warning("Could not close the running burst", exc_info=True)

    @property
    def follower_free_runs(self) -> bool:
        """Triggered mode on a rig whose follower has no trigger input named."""
        spec = self.rig.spec
        return (
            self.mode is PairingMode.TRIGGERED
            and self.rig.multi_core
            and spec is not None
            and (
                spec.trigger.follower_property is None
                or spec.trigger.follower_value is None
            )
        )

    def free_running_notice(self) -> list[str]:
        """What to say once at the start of a run whose follower free-runs."""
        if not self.follower_free_runs:
            return []
        return [
            "the rig file names no trigger input for the follower camera(s), so "
            "in triggered mode they free-run beside the leader: pairs are the "
            "nearest exposures, labelled simultaneous only where they overlap by "
            "half the shorter one. Wire the leader's exposure-out to the follower "
            "and name its trigger property in the rig file (trigger: "
            "follower_property / follower_value) for same-instant pairs."
        ]

    def _size_buffers(self, sequence: MDASequence) -> None:
        """Per-core circular buffers for about 2 s of frames (or --buffer-mb)."""
        for rc in self.rig.cores if self.rig.multi_core else [self.rig.primary]:
            core = rc.core
            mb = self.settings.buffer_mb
            if mb is None:
                frame_bytes = core.getImageBufferSize() or 1
                fps = 1000.0 / max(self._period_ms(0.0), 1.0)
                n_cams = 2 if self.mode is PairingMode.MULTI_CAMERA else 1
                mb = max(64, int(2 * fps * frame_bytes * n_cams / 2**20) + 1)
            core.setCircularBufferMemoryFootprint(mb)

    # -- events ------------------------------------------------------------------
    def event_iterator(self, events: Iterable[MDAEvent]) -> Iterator[MDAEvent]:
        """Consecutive timepoints at one place become one hardware sequence, where
        the hardware can keep their interval; else each timepoint is one trigger
        of every camera at once (the runner keeps the interval).  A burst a pause
        interrupted goes on from where it stopped."""
        if self.mode not in (PairingMode.TRIGGERED, PairingMode.MULTI_CAMERA):
            yield from events
            return
        batch: list[MDAEvent] = []
        for event in events:
            if batch and not (_joins(batch, event) and self._times(batch, event)):
                yield from self._bursts(batch)
                batch = []
            batch.append(event)
        if batch:
            yield from self._bursts(batch)

    def _bursts(self, batch: list[MDAEvent]) -> Iterator[MDAEvent]:
        yield _burst(batch)
        while self._leftover:
            rest, self._leftover = self._leftover, []
            yield _burst(rest)

    def _times(self, batch: list[MDAEvent], event: MDAEvent) -> bool:
        """Can a hardware sequence keep this interval?  Free-running as fast as the
        exposures allow always can; a longer interval only where the leader times
        its own frames (pairscope's demo cameras do; C++ cameras are not known to)."""
        interval = (
            (event.min_start_time or 0.0) - (batch[-1].min_start_time or 0.0)
        ) * 1000
        if interval <= self._period_ms(0.0):
            return True
        return self._leader_times_intervals()

    def _leader_times_intervals(self) -> bool:
        core, label = self._core("lowdose"), self._leader_label()
        if self.mode is PairingMode.MULTI_CAMERA:
            return False
        for rc in self.rig.cores if self.rig.multi_core else [self.rig.primary]:
            if rc.camera == label:
                core = rc.core
        pydevices = getattr(core, "_pydevices", None)
        if pydevices is None or label not in pydevices:
            return False
        with pydevices[label] as device:
            return hasattr(device, "set_sequence_interval_ms")

    def setup_event(self, event: MDAEvent) -> None:
        if isinstance(event, SequencedEvent):
            self.setup_single_event(event.events[0])
        else:
            self.setup_single_event(event)
        self.mmcore.waitForSystem()

    def setup_single_event(self, event: MDAEvent) -> None:
        """Move stages as the stock engine does, then check they got there.

        Work-around (pymmcore-plus 0.18.1): the stock engine logs a failed XY or
        focus move as a warning and acquires anyway, at the wrong place.  A pair
        must be where its metadata says, so a stage that did not arrive stops the
        run.  Positions are read when they change, not every pair.
        """
        core, tol = self.mmcore, self.settings.stage_tolerance_um
        try:
            super().setup_single_event(event)
        except Exception as exc:  # a stage, shutter or property that raised
            devices = [
                d
                for d, asked in (
                    (core.getXYStageDevice(), event.x_pos is not None),
                    (core.getFocusDevice(), event.z_pos is not None),
                )
                if d and asked
            ]
            where = f" (moving {' and '.join(map(repr, devices))})" if devices else ""
            raise StageFault(
                f"Setting up trigger {self._trigger} failed{where}: "
                f"{' '.join(str(exc).split()) or type(exc).__name__}. Every earlier "
                "pair is saved; check that device and start a new run.",
                trigger_index=self._trigger,
                device=devices[0] if devices else "",
            ) from exc
        moved = False
        if (
            event.x_pos is not None
            and event.y_pos is not None
            and core.getXYStageDevice()
        ):
            x, y = core.getXYPosition()
            moved = True
            if abs(x - event.x_pos) > tol or abs(y - event.y_pos) > tol:
                raise self._stage_fault(
                    core.getXYStageDevice(),
                    f"({event.x_pos}, {event.y_pos})",
                    f"({x:.2f}, {y:.2f})",
                )
        if event.z_pos is not None and core.getFocusDevice():
            z = core.getPosition()
            moved = True
            if abs(z - event.z_pos) > self.settings.focus_tolerance_um:
                raise self._stage_fault(
                    core.getFocusDevice(), f"z = {event.z_pos}", f"z = {z:.2f}"
                )
        if moved:
            self._stage = _stage_position(core)

    def _stage_fault(self, device: str, target: str, actual: str) -> StageFault:
        return StageFault(
            f"Stage {device!r} did not reach {target} µm for trigger {self._trigger}; "
            f"it reports {actual} µm. Every earlier pair is saved; check the stage "
            "(is it stuck, at a limit, powered?) and start a new run.",
            trigger_index=self._trigger,
            device=device,
        )

    def exec_event(self, event: MDAEvent) -> Iterable[Any]:
        self._runner_t0 = event.metadata.get("runner_t0")
        if isinstance(event, SequencedEvent):
            self._active = self._exec_burst(event)
            return self._active
        return super().exec_event(event)

    # -- one trigger (snaps) -------------------------------------------------------
    # pymmcore-plus's own ImagePayload (metadata FrameMetaV1 | SummaryMetaV1) does
    # not match its PImagePayload (FrameMetaV1); it ignores that itself
    def exec_single_event(  # type: ignore[override]
        self, event: MDAEvent
    ) -> Iterator[ImagePayload]:
        k = self._trigger
        self._trigger += 1
        want_ref = self.mode is not PairingMode.SPARSE or (
            k % self.settings.reference_every == 0
        )
        ref: np.ndarray | None
        ref_rec: FrameRecord | None
        with _illumination(self.mmcore):
            if self.settings.trigger is not None:
                self.mmcore.setProperty(*self.settings.trigger)
            if self.mode is PairingMode.ALTERNATING:
                low, low_rec = self._alternate(k, binned=True)
                ref, ref_rec = self._alternate(k, binned=False)
            elif self._snapper is not None:
                low, low_rec, ref, ref_rec = self._parallel(k, want_ref)
            else:
                low, low_rec = self._snap_one("lowdose", k)
                ref, ref_rec = (
                    self._snap_one("reference", k) if want_ref else (None, None)
                )
        yield from self._emit(k, event, low, low_rec, ref, ref_rec, "", False)

    def _parallel(self, k: int, want_ref: bool) -> tuple[Any, Any, Any, Any]:
        assert self._snapper is not None
        roles = ["lowdose", "reference"] if want_ref else ["lowdose"]
        jobs = [(self._core(r), self._label(r)) for r in roles]
        shots = self._snapper.snap_all(
            jobs, timeout_s=self._timeout_ms() / 1000.0, trigger_index=k
        )
        frames: dict[str, tuple[Any, Any]] = {}
        for role, (core, label), shot in zip(roles, jobs, shots, strict=True):
            rec = snapped_record(
                shot, self.clock, label, self._core_name(role), core.getExposure(label)
            )
            frames[role] = (shot.image, self._record(rec, core, label))
        low, low_rec = frames["lowdose"]
        ref, ref_rec = frames.get("reference", (None, None))
        return low, low_rec, ref, ref_rec

    def _snap_one(self, role: str, k: int) -> tuple[np.ndarray, FrameRecord]:
        core, label = self._core(role), self._label(role)
        if self._one_snapper is None:  # a camera that never returns is a timeout
            self._one_snapper = ParallelSnapper(1)
        shot = self._one_snapper.snap_all(
            [(core, label)], timeout_s=self._timeout_ms() / 1000.0, trigger_index=k
        )[0]
        rec = snapped_record(
            shot, self.clock, label, self._core_name(role), core.getExposure(label)
        )
        return shot.image, self._record(rec, core, label)

    def _alternate(self, k: int, *, binned: bool) -> tuple[np.ndarray, FrameRecord]:
        core, label, s = self.mmcore, self.detectors.lowdose, self.settings
        assert s.binning is not None  # alternating mode: validated by the settings
        core.setProperty(label, "Binning", s.binning if binned else 1)
        exposure = s.lowdose_exposure_ms if binned else s.reference_exposure_ms
        if exposure:
            core.setExposure(label, exposure)
        return self._snap_one("lowdose", k)

    def _core_name(self, role: str) -> str:
        return (
            self.detectors.lowdose_core
            if role == "lowdose"
            else self.detectors.reference_core
        )

    def _record(self, rec: FrameRecord, core: CMMCorePlus, label: str) -> FrameRecord:
        """Add what the camera's properties say (binning, pixel size, gain, trigger)."""
        binning = camera_binning(core, label)
        unbinned = None
        low_px, ref_px = (
            self.detectors.lowdose_pixel_um,
            self.detectors.reference_pixel_um,
        )
        if self.mode is PairingMode.ALTERNATING and ref_px is not None:
            unbinned = ref_px
        elif label == self.detectors.lowdose and low_px is not None:
            unbinned = self._low_unbinned_um
        elif ref_px is not None:
            unbinned = ref_px / max(binning, 1)
        rec["binning"] = binning
        rec["pixel_size_um"] = (
            None if unbinned is None else round(unbinned * binning, 6)
        )
        rec["gain"] = _float_prop(core, label, "Gain")
        trig = _float_prop(core, label, self.settings.camera_trigger_property)
        if trig is not None and "camera_trigger_index" not in rec:
            rec["camera_trigger_index"] = int(trig)
        return rec

    # -- a burst (hardware-timed sequences) ------------------------------------------
    def _exec_burst(self, burst: SequencedEvent) -> Iterator[ImagePayload]:
        """One hardware-timed sequence on every core, paired as frames arrive.

        Whatever ends it (the last frame, a cancel, a pause, a camera that stops,
        an error, the runner closing it), both sequences stop, the trigger modes
        and the shutter are restored, and every frame taken is delivered: those
        still waiting for a partner alone, marked.
        """
        events = list(burst.events)
        n = len(events)
        period = self._period_ms(_interval_ms(events))
        streams = self._streams()
        pairer = FramePairer({s.role: s.clock for s in streams})
        self._burst = _BurstState(events, self._trigger, streams, pairer)
        error: Exception | None = None
        try:
            with (
                _illumination(self.mmcore),
                self._trigger_modes(),
                camera_thread_errors() as thread_errors,
            ):
                self._start(streams, n, period)
                try:
                    yield from self._burst_loop(n, period, thread_errors)
                except Exception as exc:  # stop, keep every frame, then say why
                    error = exc
                finally:
                    self._stop(streams)
                    self._collect(final_drain=True)
            self._after_stop(streams)
            yield from self._burst_flush()
        except BaseException:  # the runner closed us (a sink error), or Ctrl-C:
            for _ in self._burst_flush(payloads=False):  # deliver, quietly
                pass
            raise
        finally:
            self._burst_report()
            self._burst = None
        if error is not None:
            raise error

    def _burst_loop(
        self, n: int, period: float, thread_errors: dict[str, BaseException]
    ) -> Iterator[ImagePayload]:
        b = self._burst
        assert b is not None
        # the exposures stay as the burst started them: one read, not one per poll
        timeout_s = self._timeout_ms() / 1000.0
        while not self._stop_requested():
            for label, exc in thread_errors.items():
                raise camera_fault(label, b.k0 + b.index, exc)
            got = self._collect()
            for low, ref, problem in b.pairer.pairs():
                yield from self._emit_frames(low, ref, problem)
            if all(s.received >= n for s in b.streams):
                return
            if got:
                continue
            stopped = stopped_camera(b.streams, n, period, timeout_s)
            if stopped is not None:
                raise CameraFault(
                    camera_stopped_message(
                        stopped, n, time.perf_counter() - stopped.last_frame_at
                    ),
                    trigger_index=b.k0 + b.index,
                    camera=stopped.label,
                )
            if self._leader_done(b.streams, n):
                # a follower that missed triggers owes frames that never come
                quiet = time.perf_counter() - max(s.last_frame_at for s in b.streams)
                if quiet > 2 * period / 1000.0 + STOP_MARGIN_S:
                    self._check_followers(b.streams, n)
                    return
            time.sleep(POLL_S)

    def _check_followers(self, streams: list[CameraStream], n: int) -> None:
        """The leader is done: a follower that owes a few frames missed triggers
        (the run ends 'incomplete'); one that owes more than a fifth of the burst
        stopped delivering (a camera fault)."""
        b = self._burst
        assert b is not None
        for s in streams:
            if n - s.received > max(3, n // 5):
                silent = time.perf_counter() - s.last_frame_at
                raise CameraFault(
                    camera_stopped_message(s, n, silent),
                    trigger_index=b.k0 + b.index,
                    camera=s.label,
                )

    def _collect(self, *, final_drain: bool = False) -> int:
        """Pop every core's waiting frames into the pairer; how many there were."""
        b = self._burst
        assert b is not None
        got = 0
        for core, by_label in self._by_core(b.streams):
            try:
                frames = drain(core, by_label, self.clock)
            except SequenceOverflow:
                if final_drain:  # the run already stops for it
                    continue
                raise
            for frame in frames:
                self._record(frame.record, core, frame.record["camera"])
                b.pairer.add(frame)
                got += 1
        return got

    def _burst_flush(self, *, payloads: bool = True) -> Iterator[ImagePayload]:
        """Every frame still waiting for a partner, delivered (alone where alone)."""
        b = self._burst
        if b is None:
            return
        for low, ref, problem in b.pairer.pairs(final=True):
            if payloads:
                yield from self._emit_frames(low, ref, problem)
            else:
                self._deliver_frames(low, ref, problem)

    def _burst_report(self) -> None:
        """Frame counts, missed partners and the interval kept, as problems."""
        b = self._burst
        if b is None:
            return
        self._trigger = b.k0 + b.index
        n = len(b.events)
        for s in b.streams:
            if s.received < n and not b.stopped_early:
                self.short_cameras[s.label] = (s.received, n)
        alone = b.pairer.alone
        if any(alone.values()):
            self.problems.append(
                f"frames without a partner of the same instant (missed triggers, "
                f"lost frames or free-running cameras): reference {alone['reference']}"
                f", low-dose {alone['lowdose']}; each is kept and marked in pairs.jsonl"
            )
        if b.pairer.number_jumps:
            self.problems.append(
                f"the offset between the cameras' image numbers changed "
                f"{b.pairer.number_jumps} time(s) (a frame lost or a trigger missed)"
            )
        asked = _interval_ms(b.events)
        got = _median_period(b.low_starts)
        if asked > 0 and got is not None and got > 1.05 * asked + 1.0:
            self.problems.append(
                f"the interval could not be kept: asked {asked:.0f} ms, the low-dose "
                f"camera's frames came every {got:.1f} ms (exposure and readout are "
                "longer than the interval)"
            )

    def _after_stop(self, streams: list[CameraStream]) -> None:
        """A cancel or pause stopped the burst early: no camera is short; after a
        pause the burst's remaining events run once the runner resumes."""
        b = self._burst
        assert b is not None
        cancelled = self.cancel_requested.is_set() or (
            self.mmcore.mda.status.cancel_requested
        )
        paused = self._pause_requested or self.mmcore.mda.status.pause_requested
        if not (cancelled or paused):
            return
        b.stopped_early = True
        low = next(s for s in streams if s.role == "lowdose")
        if paused and not cancelled:
            self._leftover = b.events[low.received :]
        self._pause_requested = False

    def _stop_requested(self) -> bool:
        if self.cancel_requested.is_set() or self._pause_requested:
            return True
        status = self.mmcore.mda.status
        return bool(status.cancel_requested or status.pause_requested)

    def _emit_frames(
        self, low: StreamFrame | None, ref: StreamFrame | None, problem: str
    ) -> Iterator[ImagePayload]:
        """Deliver one pair of a burst.  Each frame goes to the runner under its
        own camera's timepoint (its place in its camera's stream), so a frame that
        lost its partner never takes another frame's ``(t, cam)`` slot."""
        b = self._burst
        assert b is not None
        if low is not None:
            b.low_starts.append(low.record["exposure_window_ms"][0])
        low_event, ref_event = (
            None if f is None else b.events[min(f.number, len(b.events) - 1)]
            for f in (low, ref)
        )
        event = low_event or ref_event
        assert event is not None
        b.index += 1
        yield from self._emit(
            b.k0 + b.index - 1,
            event,
            None if low is None else low.image,
            None if low is None else low.record,
            None if ref is None else ref.image,
            None if ref is None else ref.record,
            problem,
            True,
            camera_metadata=(
                None if low is None else low.metadata,
                None if ref is None else ref.metadata,
            ),
            frame_events=(low_event, ref_event),
        )

    def _deliver_frames(
        self, low: StreamFrame | None, ref: StreamFrame | None, problem: str
    ) -> None:
        for _ in self._emit_frames(low, ref, problem):
            pass

    def _streams(self) -> list[CameraStream]:
        streams = []
        for role in ("lowdose", "reference"):
            core, label = self._core(role), self._label(role)
            pydevices = getattr(core, "_pydevices", None)
            streams.append(
                CameraStream(
                    core,
                    self._core_name(role),
                    label,
                    role,
                    core.getExposure(label),
                    python_camera=pydevices is not None and label in pydevices,
                )
            )
        return streams

    def _by_core(
        self, streams: list[CameraStream]
    ) -> list[tuple[CMMCorePlus, dict[str, CameraStream]]]:
        groups: dict[int, tuple[CMMCorePlus, dict[str, CameraStream]]] = {}
        for s in streams:
            groups.setdefault(id(s.core), (s.core, {}))[1][s.label] = s
        return list(groups.values())

    def _start(self, streams: list[CameraStream], n: int, period_ms: float) -> None:
        """Followers first (armed for the trigger), the leader last."""
        if self.mode is PairingMode.MULTI_CAMERA:
            core = self.mmcore
            multi = self.detectors.multi_camera or core.getCameraDevice()
            t = start_sequence(core, multi, n, period_ms)
            for s in streams:
                s.t_start, s.last_frame_at = t, time.perf_counter()
                s.clock.origin_ms = self.clock.ms(t)  # the pairer holds this clock
            return
        leader = self._leader_label()
        for s in sorted(streams, key=lambda s: s.label == leader):
            try:
                s.t_start = start_sequence(s.core, s.label, n, period_ms)
            except Exception as exc:
                raise camera_fault(s.label, self._trigger, exc) from exc
            s.clock.origin_ms = self.clock.ms(s.t_start)
            s.last_frame_at = time.perf_counter()

    def _stop(self, streams: list[CameraStream]) -> None:
        leader = self._leader_label()
        for s in sorted(streams, key=lambda s: s.label != leader):
            try:
                if self.mode is PairingMode.MULTI_CAMERA:
                    s.core.stopSequenceAcquisition()
                else:
                    s.core.stopSequenceAcquisition(s.label)
            except Exception:  # stopping must not hide the reason we stopped
                logger.warning("Could not stop %s's sequence", s.label, exc_info=True)

    def _running(self, s: CameraStream) -> bool:
        try:
            if self.mode is PairingMode.MULTI_CAMERA:
                return bool(s.core.isSequenceRunning())
            return bool(s.core.isSequenceRunning(s.label))
        except Exception:
            return False

    def _leader_done(self, streams: list[CameraStream], n: int) -> bool:
        if self.mode is PairingMode.MULTI_CAMERA:
            return not self._running(streams[0])
        leader = self._leader_label()
        s = next((s for s in streams if s.label == leader), streams[0])
        return s.received >= n or not self._running(s)

    def _leader_label(self) -> str:
        spec = self.rig.spec
        if spec is None or spec.trigger.leader is None:
            return self.detectors.lowdose
        return self.rig.core_named(spec.trigger.leader).camera

    @contextmanager
    def _trigger_modes(self) -> Iterator[None]:
        """Put the cameras in the rig's trigger modes for the burst, then restore."""
        spec = self.rig.spec
        changes: list[tuple[CMMCorePlus, str, str, str]] = []
        if spec is not None and self.rig.multi_core:
            w = spec.trigger
            leader = w.leader or self.rig.primary.name
            for rc in self.rig.cores:
                prop, value = (
                    (w.leader_property, w.leader_value)
                    if rc.name == leader
                    else (w.follower_property, w.follower_value)
                )
                if prop and value is not None:
                    changes.append(
                        (rc.core, rc.camera, prop, rc.core.getProperty(rc.camera, prop))
                    )
                    rc.core.setProperty(rc.camera, prop, value)
        try:
            yield
        finally:
            for core, label, prop, old in changes:
                try:
                    core.setProperty(label, prop, old)
                except Exception:
                    logger.warning(
                        "Could not restore %s.%s", label, prop, exc_info=True
                    )

    # -- timing --------------------------------------------------------------------
    def check_timing(self, sequence: MDASequence) -> None:
        """Refuse an interval no camera can keep: shorter than an exposure.

        An interval of 0 (as fast as the cameras go) is always fine; an interval
        between the exposure and the exposure plus readout runs slower than asked
        and the run says so at its end.
        """
        s = self.settings
        exposures = [
            s.lowdose_exposure_ms
            or self._core("lowdose").getExposure(self._label("lowdose")),
            s.reference_exposure_ms
            or self._core("reference").getExposure(self._label("reference")),
        ]
        if self.mode is PairingMode.ALTERNATING:  # one camera, both exposures in turn
            longest = sum(exposures)
        else:
            longest = max(exposures)
        starts = sorted(
            {round(e.min_start_time or 0.0, 6) for e in sequence.iter_events()}
        )
        gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
        if gaps and 1000.0 * min(gaps) < longest - 0.5:  # not a rounding error
            raise ConfigError(
                f"The sequence asks for an interval of {1000 * min(gaps):.0f} ms, "
                f"shorter than the exposures ({longest:.0f} ms): no camera can keep "
                f"it. Use an interval of at least {longest:.0f} ms, or 0 for as fast "
                "as the cameras go."
            )

    def _exposures(self) -> list[float]:
        return [self._core(r).getExposure(self._label(r)) for r in ROLE_CAM]

    def _period_ms(self, interval_ms: float) -> float:
        """The leader's frame period: the interval, but never shorter than the
        longest exposure plus a readout margin (a follower still exposing would
        miss the next trigger)."""
        return max(interval_ms, 1.05 * max(self._exposures()) + 3.0)

    def _timeout_ms(self) -> float:
        if self.settings.frame_timeout_ms is not None:
            return self.settings.frame_timeout_ms
        # every camera silent this long is a fault; longer than the wait for a
        # follower's missed triggers (2 periods + STOP_MARGIN_S), and than a
        # starved camera thread on a loaded machine (2.4 s measured)
        slack_ms = 1000.0 * (STOP_MARGIN_S + 2.0)
        return 3 * (max(self._exposures()) + self._period_ms(0.0)) + slack_ms

    # -- pairs ------------------------------------------------------------------------
    def _emit(
        self,
        k: int,
        event: MDAEvent,
        low: np.ndarray | None,
        low_rec: FrameRecord | None,
        ref: np.ndarray | None,
        ref_rec: FrameRecord | None,
        problem: str,
        hardware: bool,
        camera_metadata: tuple[dict[str, str] | None, dict[str, str] | None] = (
            None,
            None,
        ),
        frame_events: tuple[MDAEvent | None, MDAEvent | None] = (None, None),
    ) -> Iterator[ImagePayload]:
        """Deliver the pair (writer first), then yield each frame to the runner as
        pymmcore-plus does (``FrameMetaV1``, ``"cam"`` index, the camera's own
        metadata); the runner's answer (cancel, pause) is kept for the loop."""
        d = self.detectors
        if low is not None and d.lowdose_crop is not None:
            low = _crop(low, d.lowdose_crop)
        if ref is not None and d.reference_crop is not None:
            ref = _crop(ref, d.reference_crop)
        for rec, img in ((low_rec, low), (ref_rec, ref)):
            if rec is not None and img is not None:
                rec["shape"] = [int(img.shape[0]), int(img.shape[1])]
        meta = self._metadata(event, k, low_rec, ref_rec)
        want_ref = self.mode is not PairingMode.SPARSE or (
            k % self.settings.reference_every == 0
        )
        if not problem and want_ref and (low is None or ref is None):
            problem = "partner frame missing"
        if problem:
            meta["partner_missing"] = problem
            self.incomplete += 1
        pair = Pair(k, low, ref, meta)
        self.pairs_emitted += 1
        self.deliver(pair)
        frames = (("lowdose", low, low_rec), ("reference", ref, ref_rec))
        for (role, img, rec), cam_meta, own in zip(
            frames, camera_metadata, frame_events, strict=True
        ):
            if img is None or rec is None:
                continue
            at = own or event
            sub = at.model_copy(update={"index": {**at.index, "cam": ROLE_CAM[role]}})
            fmeta = frame_metadata(
                self._core(role),
                cached=True,
                runner_time_ms=self._runner_ms(rec),
                camera_device=rec["camera"],
                mda_event=sub,
                hardware_triggered=hardware,
                extra={"pairscope": {"pair": k, "role": role, "frame": dict(rec)}},
            )
            fmeta["exposure_ms"] = rec["exposure_ms"]
            if cam_meta is not None:
                fmeta["camera_metadata"] = cam_meta
            if rec.get("pixel_size_um"):
                fmeta["pixel_size_um"] = rec["pixel_size_um"]  # type: ignore[typeddict-item]
            signal = yield ImagePayload(img, sub, fmeta)
            if signal == "cancel":
                self.cancel_requested.set()
            elif signal == "pause":
                self._pause_requested = True

    def _runner_ms(self, rec: FrameRecord) -> float:
        """The frame's exposure end on the runner's clock (ms since it started)."""
        end = rec["exposure_window_ms"][1]
        if self._runner_t0 is None:
            return end
        return end + (self.clock.t0 - self._runner_t0) * 1000.0

    def _metadata(
        self,
        event: MDAEvent,
        k: int,
        low: FrameRecord | None,
        ref: FrameRecord | None,
    ) -> PairMetadata:
        light = self._static.get("light")
        both = low is not None and ref is not None
        return PairMetadata(
            trigger_index=k,
            event_index=dict(event.index),
            lowdose=low,
            reference=ref,
            simultaneous=bool(both and _same_instant(low, ref)),  # type: ignore[arg-type]
            exposure_overlap_ms=overlap_ms(low, ref) if both else None,  # type: ignore[arg-type]
            split_ratio=self._static.get("split_ratio"),
            light_power=_float_prop(self.mmcore, *light) if light else None,
            stage_xyz_um=self._stage,
            mode=self.mode.value,
        )

    def _split_ratio(self) -> float | None:
        """Reference share of the light, from cameras that report a SplitFraction."""
        if self.mode is PairingMode.ALTERNATING:
            return None
        low = _float_prop(
            self._core("lowdose"), self.detectors.lowdose, "SplitFraction"
        )
        ref = _float_prop(
            self._core("reference"), self.detectors.reference, "SplitFraction"
        )
        if low is None or ref is None or low + ref <= 0:
            return None
        return round(ref / (low + ref), 6)


# -- helpers ---------------------------------------------------------------------


def _crop(img: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    y0, x0, h, w = crop
    return np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w])


def _joins(batch: list[MDAEvent], event: MDAEvent) -> bool:
    """Can ``event`` extend this burst (only time advances, at a steady interval)?"""
    first, prev = batch[0], batch[-1]
    if {k: v for k, v in event.index.items() if k != "t"} != {
        k: v for k, v in first.index.items() if k != "t"
    }:
        return False
    if (
        event.x_pos != prev.x_pos
        or event.y_pos != prev.y_pos
        or event.z_pos != prev.z_pos
        or event.channel != prev.channel
        or event.exposure != prev.exposure
        or event.properties
        or event.reset_event_timer
    ):
        return False
    if len(batch) < 2:
        return True
    step = (batch[1].min_start_time or 0.0) - (first.min_start_time or 0.0)
    gap = (event.min_start_time or 0.0) - (prev.min_start_time or 0.0)
    return abs(gap - step) < 1e-6


def _burst(events: list[MDAEvent]) -> MDAEvent:
    if len(events) == 1:
        return events[0]
    first = events[0]
    return SequencedEvent(
        events=tuple(events),
        index=first.index,
        x_pos=first.x_pos,
        y_pos=first.y_pos,
        z_pos=first.z_pos,
        channel=first.channel,
        exposure=first.exposure,
        min_start_time=first.min_start_time,
        pos_name=first.pos_name,
        metadata=dict(first.metadata),
    )


def _median_period(starts: list[float]) -> float | None:
    if len(starts) < 3:
        return None
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    return gaps[len(gaps) // 2]


@dataclass(slots=True)
class _BurstState:
    """What one running burst knows: its events, cameras, pairer, progress."""

    events: list[MDAEvent]
    k0: int  # the trigger index of its first pair
    streams: list[CameraStream]
    pairer: FramePairer
    index: int = 0  # pairs delivered so far
    stopped_early: bool = False  # cancelled or paused: fewer frames is no fault
    low_starts: list[float] = field(default_factory=list)


def _interval_ms(events: list[MDAEvent]) -> float:
    if len(events) < 2:
        return 0.0
    t0, t1 = events[0].min_start_time or 0.0, events[1].min_start_time or 0.0
    return max(t1 - t0, 0.0) * 1000.0


@contextmanager
def _illumination(core: CMMCorePlus) -> Iterator[None]:
    """Open the shutter once around a pair's (or a burst's) exposures.

    Work-around (pymmcore-plus 0.18.1): ``UniMMCore.snapImage`` does not operate a
    *Python* shutter under auto-shutter.  Doing it here, with auto-shutter off for
    the pair, works for C++ and Python shutters alike and lights every exposure.
    """
    shutter = core.getShutterDevice()
    if not (shutter and core.getAutoShutter()):
        yield
        return
    core.setAutoShutter(False)
    try:
        core.setShutterOpen(shutter, True)
        yield
    finally:
        core.setShutterOpen(shutter, False)
        core.setAutoShutter(True)


def _float_prop(core: CMMCorePlus, label: str, prop: str) -> float | None:
    if not core.hasProperty(label, prop):
        return None
    try:
        return float(core.getProperty(label, prop))
    except ValueError:
        return None


def light_power_property(core: CMMCorePlus) -> tuple[str, str] | None:
    """The shutter device's power property, if it has one (e.g. an LED's Power)."""
    shutter = core.getShutterDevice()
    if not shutter:
        return None
    for prop in core.getDevicePropertyNames(shutter):
        if "power" in prop.lower() or "intensity" in prop.lower():
            return (shutter, prop)
    return None


def _stage_position(
    core: CMMCorePlus,
) -> tuple[float | None, float | None, float | None]:
    x = y = z = None
    try:
        if core.getXYStageDevice():
            x, y = core.getXYPosition()
        if core.getFocusDevice():
            z = core.getPosition()
    except Exception:  # a stage that cannot report must not stop the run
        logger.warning("Could not read the stage position", exc_info=True)
    return (x, y, z)


def _same_instant(low: FrameRecord, ref: FrameRecord) -> bool:
    """Both frames are of one instant: where both cameras report the trigger they
    read, by that (their own evidence: a busy machine's late reads cannot blur it);
    otherwise their exposure windows overlap by half the shorter exposure."""
    same = same_trigger(low, ref)
    return simultaneous(low, ref) if same is None else same
