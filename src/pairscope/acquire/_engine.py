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

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.core._sequencing import SequencedEvent
from pymmcore_plus.mda import MDAEngine
from pymmcore_plus.mda._engine import ImagePayload
from pymmcore_plus.metadata import frame_metadata
from useq import MDAEvent, MDASequence

from ..config import AcquisitionSettings, PairingMode
from ..errors import StageFault
from ..hardware import DetectorPair, Rig, camera_binning
from ._pair import Pair, PairMetadata
from ._sequence import (
    CameraStream,
    SeqFrame,
    SequencePairer,
    camera_thread_errors,
    check_hang,
    drain,
    start_sequence,
)
from ._snaps import ParallelSnapper, camera_fault, snap, snapped_record
from ._timing import FrameRecord, RunClock, overlap_ms, simultaneous

logger = logging.getLogger(__name__)
ROLE_CAM = {"lowdose": 0, "reference": 1}


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
        self._saved: list[tuple[CMMCorePlus, str, str, str]] = []

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
        self.clock = RunClock()
        self._static = {
            "split_ratio": s.split_ratio or self._split_ratio(),
            "light": _light_power_property(self.mmcore),
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

    def teardown_sequence(self, sequence: MDASequence) -> None:
        if self._snapper is not None:
            self._snapper.close()
            self._snapper = None
        super().teardown_sequence(sequence)

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
        """Consecutive timepoints at one place become one hardware sequence."""
        if self.mode not in (PairingMode.TRIGGERED, PairingMode.MULTI_CAMERA):
            yield from events
            return
        batch: list[MDAEvent] = []
        for event in events:
            if batch and not _joins(batch, event):
                yield _burst(batch)
                batch = []
            batch.append(event)
        if batch:
            yield _burst(batch)

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
        super().setup_single_event(event)
        core, tol = self.mmcore, self.settings.stage_tolerance_um
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
        if isinstance(event, SequencedEvent):
            return self._exec_burst(event)
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
        try:
            shot = snap(core, label)
        except Exception as exc:
            raise camera_fault(label, k, exc) from exc
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
            unbinned = low_px / max(self.settings.binning or binning, 1)
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
        events = list(burst.events)
        n = len(events)
        interval_ms = _interval_ms(events)
        period = self._period_ms(interval_ms)
        streams = self._streams()
        pairer = SequencePairer(
            tolerance_ms=0.5 * min(s.exposure_ms for s in streams), period_ms=period
        )
        k0 = self._trigger
        index = 0
        with (
            _illumination(self.mmcore),
            self._trigger_modes(),
            camera_thread_errors() as thread_errors,
        ):
            self._start(streams, n, period)
            try:
                while True:
                    if self.cancel_requested.is_set():
                        break
                    for label, exc in thread_errors.items():
                        raise camera_fault(label, k0 + index, exc)
                    got = 0
                    for core, by_label in self._by_core(streams):
                        for frame in drain(core, by_label, self.clock):
                            self._record(frame.record, core, frame.record["camera"])
                            pairer.add(frame)
                            got += 1
                    for low, ref, problem in pairer.pairs():
                        yield from self._emit_frames(
                            events, k0, index, low, ref, problem
                        )
                        index += 1
                    if all(s.received >= n for s in streams):
                        break
                    if got:
                        continue
                    if self._leader_done(streams, n):
                        # followers that missed a few triggers owe frames that never
                        # come; one that owes many has stopped delivering
                        quiet = time.perf_counter() - max(
                            s.last_frame_at for s in streams
                        )
                        grace_ms = min(2 * period + 500.0, self._timeout_ms())
                        if quiet > grace_ms / 1000.0:
                            check_hang(streams, n, 0.0, k0 + index, max(3, n // 5))
                            break
                    else:
                        check_hang(streams, n, self._timeout_ms() / 1000.0, k0 + index)
                    time.sleep(0.001)
            finally:
                self._stop(streams)
        for core, by_label in self._by_core(streams):  # frames still in the buffers
            for frame in drain(core, by_label, self.clock):
                self._record(frame.record, core, frame.record["camera"])
                pairer.add(frame)
        for low, ref, problem in pairer.pairs(final=True):
            yield from self._emit_frames(events, k0, index, low, ref, problem)
            index += 1
        self._trigger = k0 + index
        for s in streams:
            if s.gaps:
                self.problems.append(
                    f"camera {s.label!r}: {s.gaps} gap(s) in its image numbers"
                )
        missed = pairer.missed
        if any(missed.values()):
            self.problems.append(
                f"frames without a partner of the same instant (missed triggers or "
                f"cameras out of step): reference {missed['reference']}, low-dose "
                f"{missed['lowdose']}; each is kept and marked in pairs.jsonl"
            )

    def _emit_frames(
        self,
        events: list[MDAEvent],
        k0: int,
        index: int,
        low: SeqFrame | None,
        ref: SeqFrame | None,
        problem: str,
    ) -> Iterator[ImagePayload]:
        event = events[min(low.number if low else index, len(events) - 1)]
        yield from self._emit(
            k0 + index,
            event,
            None if low is None else low.image,
            None if low is None else low.record,
            None if ref is None else ref.image,
            None if ref is None else ref.record,
            problem,
            True,
        )

    def _streams(self) -> list[CameraStream]:
        streams = []
        for role in ("lowdose", "reference"):
            core, label = self._core(role), self._label(role)
            streams.append(
                CameraStream(
                    core, self._core_name(role), label, role, core.getExposure(label)
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
            return
        leader = self._leader_label()
        for s in sorted(streams, key=lambda s: s.label == leader):
            try:
                s.t_start = start_sequence(s.core, s.label, n, period_ms)
            except Exception as exc:
                raise camera_fault(s.label, self._trigger, exc) from exc
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
        return 3 * (max(self._exposures()) + self._period_ms(0.0)) + 2000.0

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
    ) -> Iterator[ImagePayload]:
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
        for role, img, rec in (("lowdose", low, low_rec), ("reference", ref, ref_rec)):
            if img is None or rec is None:
                continue
            sub = event.model_copy(
                update={"index": {**event.index, "cam": ROLE_CAM[role]}}
            )
            fmeta = frame_metadata(
                self._core(role),
                camera_device=rec["camera"],
                mda_event=sub,
                hardware_triggered=hardware,
                extra={"pairscope": {"pair": k, "role": role, "frame": dict(rec)}},
            )
            fmeta["exposure_ms"] = rec["exposure_ms"]
            if rec.get("pixel_size_um"):
                fmeta["pixel_size_um"] = rec["pixel_size_um"]  # type: ignore[typeddict-item]
            yield ImagePayload(img, sub, fmeta)

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
            simultaneous=bool(both and simultaneous(low, ref)),  # type: ignore[arg-type]
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


def _light_power_property(core: CMMCorePlus) -> tuple[str, str] | None:
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
