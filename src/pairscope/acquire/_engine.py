"""The paired engine: one trigger -> one (low-dose, reference) pair, via the core API.

A subclass of pymmcore-plus's ``MDAEngine`` (which ignores camera pairing): stage,
focus and property changes of the ``useq`` event are the stock engine's; this class
reads the two detectors of each trigger and checks they saw the same instant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.mda import MDAEngine
from pymmcore_plus.mda._engine import ImagePayload
from useq import MDAEvent, MDASequence

from ..config import AcquisitionSettings, PairingMode
from ..errors import CameraFault, StageFault
from ..hardware import DetectorPair
from ._pair import CameraFrameInfo, Pair, PairMetadata
from ._signals import PairedSignals

logger = logging.getLogger(__name__)


class PairedEngine(MDAEngine):
    """Acquire a pair per ``useq`` event and emit it on ``signals.pairReady``."""

    def __init__(
        self,
        core: CMMCorePlus,
        detectors: DetectorPair,
        settings: AcquisitionSettings,
        signals: PairedSignals,
    ) -> None:
        # pairs are read trigger by trigger: no merging into sequenced events
        super().__init__(core, use_hardware_sequencing=False)
        self.detectors = detectors
        self.settings = settings
        self.signals = signals
        self.pairs_emitted = 0
        self.incomplete = 0
        self._trigger = 0
        self._image_numbers: dict[str, int] = {}
        self._t0 = time.perf_counter()
        self._static: dict[str, Any] = {}

    # -- sequence -----------------------------------------------------------
    def setup_sequence(self, sequence: MDASequence) -> Any:
        meta = super().setup_sequence(sequence)
        core = self.mmcore
        d, s = self.detectors, self.settings
        if s.binning is not None and d.mode is not PairingMode.ALTERNATING:
            core.setProperty(d.lowdose, "Binning", s.binning)
        if s.lowdose_exposure_ms and d.mode is not PairingMode.ALTERNATING:
            core.setExposure(d.lowdose, s.lowdose_exposure_ms)
        if s.reference_exposure_ms and d.mode is not PairingMode.ALTERNATING:
            core.setExposure(d.reference, s.reference_exposure_ms)
        self._trigger = 0
        self.pairs_emitted = 0
        self.incomplete = 0
        self._image_numbers = {d.lowdose: 0, d.reference: 0}
        self._t0 = time.perf_counter()
        self._static = {
            "split_ratio": s.split_ratio or _split_ratio(core, d),
            "light": _light_power_property(core),
            "pixel_um": {
                lbl: _unbinned_pixel_um(core, lbl) for lbl in {d.lowdose, d.reference}
            },
        }
        return meta

    def setup_single_event(self, event: MDAEvent) -> None:
        """Move stages as the stock engine does, then check they got there.

        Work-around (pymmcore-plus 0.18.1): the stock engine logs a failed XY move
        as a warning and acquires anyway, at the wrong place.  A pair must be where
        its metadata says, so a stage that did not arrive stops the run.
        """
        super().setup_single_event(event)
        core, tol = self.mmcore, self.settings.stage_tolerance_um
        if (
            event.x_pos is not None
            and event.y_pos is not None
            and core.getXYStageDevice()
        ):
            x, y = core.getXYPosition()
            if abs(x - event.x_pos) > tol or abs(y - event.y_pos) > tol:
                raise StageFault(
                    f"XY stage {core.getXYStageDevice()!r} did not reach "
                    f"({event.x_pos}, {event.y_pos}) µm for trigger {self._trigger}; it "
                    f"reports ({x:.2f}, {y:.2f}) µm (see the device error logged above). "
                    "Every earlier pair is saved; check the stage and start a new run.",
                    trigger_index=self._trigger,
                    device=core.getXYStageDevice(),
                )

    # -- one trigger ----------------------------------------------------------
    def exec_single_event(self, event: MDAEvent) -> Iterator[ImagePayload]:
        d, core, k = self.detectors, self.mmcore, self._trigger
        self._trigger += 1
        want_reference = d.mode is not PairingMode.SPARSE or (
            k % self.settings.reference_every == 0
        )
        with _illumination(core):
            if self.settings.trigger is not None:
                core.setProperty(*self.settings.trigger)
            if d.mode is PairingMode.ALTERNATING:
                low, low_info = self._read_alternating(k, binned=True)
                ref, ref_info = self._read_alternating(k, binned=False)
            else:
                low, low_info = self._read(d.lowdose, k)
                ref, ref_info = (
                    self._read(d.reference, k)
                    if want_reference
                    else (
                        None,
                        None,
                    )
                )
        pair = Pair(k, low, ref, self._metadata(event, k, low_info, ref_info))
        problem = self._partner_problem(low_info, ref_info, want_reference)
        if problem:
            pair = Pair(k, low, None, {**pair.metadata, "partner_missing": problem})
            self.incomplete += 1
            _emit(self.signals.pairIncomplete, pair, problem)
        self.pairs_emitted += 1
        _emit(self.signals.pairReady, pair)
        yield ImagePayload(low, _sub_event(event, 0), {"pairscope_role": "lowdose"})
        if pair.reference is not None:
            yield ImagePayload(
                pair.reference, _sub_event(event, 1), {"pairscope_role": "reference"}
            )

    def _read(self, label: str, k: int) -> tuple[np.ndarray, CameraFrameInfo]:
        core = self.mmcore
        try:
            if core.getCameraDevice() != label:
                core.setCameraDevice(label)
            core.snapImage()
            img = core.getImage()
        except Exception as exc:
            raise CameraFault(
                f"Camera {label!r} failed at trigger {k}: {exc}. Every earlier pair "
                "is saved; check the camera (cable, power, driver) and start a new "
                "run.",
                trigger_index=k,
                camera=label,
            ) from exc
        t_ms = (time.perf_counter() - self._t0) * 1000.0
        number = self._image_numbers[label]
        self._image_numbers[label] = number + 1
        binning = _int_prop(core, label, "Binning", 1)
        pixel_um = self._static["pixel_um"][label]
        info = CameraFrameInfo(
            label=label,
            image_number=number,
            timestamp_ms=round(t_ms, 3),
            exposure_ms=core.getExposure(label),
            binning=binning,
            gain=_float_prop(core, label, "Gain"),
            pixel_size_um=None if pixel_um is None else pixel_um * binning,
            shape=(int(img.shape[0]), int(img.shape[1])),
        )
        reported = _int_prop(core, label, self.settings.camera_trigger_property, None)
        if reported is not None:
            info["camera_trigger_index"] = reported  # type: ignore[typeddict-unknown-key]
        return img, info

    def _read_alternating(
        self, k: int, *, binned: bool
    ) -> tuple[np.ndarray, CameraFrameInfo]:
        core, label, s = self.mmcore, self.detectors.lowdose, self.settings
        core.setProperty(label, "Binning", s.binning if binned else 1)
        exposure = s.lowdose_exposure_ms if binned else s.reference_exposure_ms
        if exposure:
            core.setExposure(label, exposure)
        return self._read(label, k)

    # -- bookkeeping ----------------------------------------------------------
    def _partner_problem(
        self,
        low: CameraFrameInfo,
        ref: CameraFrameInfo | None,
        want_reference: bool,
    ) -> str:
        if not want_reference or self.detectors.mode is PairingMode.ALTERNATING:
            return ""
        if ref is None:
            return "reference frame missing"
        a = low.get("camera_trigger_index")  # type: ignore[misc]
        b = ref.get("camera_trigger_index")  # type: ignore[misc]
        if a is not None and b is not None and a != b:
            return f"cameras read different triggers ({a} vs {b}): not the same instant"
        return ""

    def _metadata(
        self,
        event: MDAEvent,
        k: int,
        low: CameraFrameInfo,
        ref: CameraFrameInfo | None,
    ) -> PairMetadata:
        core = self.mmcore
        light = self._static["light"]
        return PairMetadata(
            trigger_index=k,
            event_index=dict(event.index),
            lowdose=low,
            reference=ref,
            time_difference_ms=(
                None
                if ref is None
                else round(ref["timestamp_ms"] - low["timestamp_ms"], 3)
            ),
            split_ratio=self._static["split_ratio"],
            light_power=_float_prop(core, *light) if light else None,
            stage_xyz_um=_stage_position(core),
            mode=self.detectors.mode.value,
        )


# -- helpers ------------------------------------------------------------------


@contextmanager
def _illumination(core: CMMCorePlus) -> Iterator[None]:
    """Open the shutter once around both exposures of a pair.

    Work-around (pymmcore-plus 0.18.1): ``UniMMCore.snapImage`` does not operate a
    *Python* shutter under auto-shutter.  Doing it here, with auto-shutter off for
    the pair, works for C++ and Python shutters alike and lights both exposures.
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


def _emit(signal: Any, *args: Any) -> None:
    """Listener errors are logged, never allowed to kill an acquisition."""
    try:
        signal.emit(*args)
    except Exception:
        logger.exception("A pairscope listener failed (the acquisition goes on)")


def _sub_event(event: MDAEvent, camera_index: int) -> MDAEvent:
    return event.model_copy(update={"index": {**event.index, "c": camera_index}})


def _int_prop(core: CMMCorePlus, label: str, prop: str, default: Any) -> Any:
    if not core.hasProperty(label, prop):
        return default
    try:
        return int(float(core.getProperty(label, prop)))
    except ValueError:
        return default


def _float_prop(core: CMMCorePlus, label: str, prop: str) -> float | None:
    if not core.hasProperty(label, prop):
        return None
    try:
        return float(core.getProperty(label, prop))
    except ValueError:
        return None


def _split_ratio(core: CMMCorePlus, d: DetectorPair) -> float | None:
    """Reference share of the light, from cameras that report a SplitFraction."""
    if d.mode is PairingMode.ALTERNATING:
        return None
    low = _float_prop(core, d.lowdose, "SplitFraction")
    ref = _float_prop(core, d.reference, "SplitFraction")
    if low is None or ref is None or low + ref <= 0:
        return None
    return round(ref / (low + ref), 6)


def camera_pixel_size_um(
    core: CMMCorePlus, label: str, binning: int | None = None
) -> float | None:
    """Pixel size in the sample plane of ``label`` at ``binning`` (default: current)."""
    unbinned = _unbinned_pixel_um(core, label)
    if unbinned is None:
        return None
    return unbinned * (binning or _int_prop(core, label, "Binning", 1))


def _unbinned_pixel_um(core: CMMCorePlus, label: str) -> float | None:
    """Unbinned pixel size in the sample plane: the core's pixel-size config for the
    current camera, else the camera's own ``PixelSize_um`` property."""
    if core.getCameraDevice() == label and (px := core.getPixelSizeUm()) > 0:
        return px / _int_prop(core, label, "Binning", 1)
    return _float_prop(core, label, "PixelSize_um")


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
