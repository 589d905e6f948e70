"""Pure-Python Micro-Manager devices of the demo microscope, for ``UniMMCore``.

Load them from a config file with ``#py pyDevice,<label>,pairscope.sim.devices,<Class>``
lines (see ``hardware_configs/demo_dual_camera.cfg``).  The hub owns the specimen
and its clock; every trigger is one specimen instant, rendered once for all the
cameras attached to the hub, so the two detectors behind the virtual beam splitter
see the same instant.  All physical parameters are device properties.

One optical bench, many cores: the hub and its peripherals are found by the hub
*label* (each camera's pre-init ``Hub`` property), not by the core that loaded them,
so a rig of one core per camera (``hardware_configs/demo_rig.yaml``) puts the
low-dose camera, stages and light in one core and the reference camera in another,
both seeing one specimen and one trigger line.

Triggering, as on a real rig: every exposure start on the line is a *pulse* (one
specimen instant).  ``TriggerMode=Internal``: a snap joins the pulse another camera
opened less than that camera's exposure ago (two overlapping exposures see one
instant) or fires a new one; a sequence free-runs at its interval and fires a pulse
per frame (exposure-out: the leader of a triggered rig).  ``TriggerMode=External``:
the camera exposes on the next pulse of the line; a pulse that arrives while it is
still exposing is missed, as real cameras miss it.  Setting the hub's ``Trigger``
property to ``Fire`` sends a pulse, as a DAQ would.  Exposures take real time
(``RealTimeExposure=On``, the default).  Drills: ``TriggerCable=Unplugged`` (the
camera free-runs), ``MissTriggerEvery``, ``HangAfterFrames``, ``FailAfterFrames``, and
the stages' ``Stuck``.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pymmcore_plus.experimental.unicore import (
    CameraDevice,
    HubDevice,
    ShutterDevice,
    StageDevice,
    XYStageDevice,
    pymm_property,
)

from ._optics import Optics
from ._scene import Scene, SensorGeometry
from ._sensor import Sensor
from ._specimen import KINDS, Specimen

# ``@x.setter  # type: ignore[no-redef]`` below: mypy accepts the getter/setter pair
# of one name only for the builtin ``property``, not for ``pymm_property``


@dataclass
class _Rig:
    """The devices attached to one hub label, whatever order they initialise in."""

    hub: DemoHub | None = None
    cameras: dict[str, DemoCamera] = field(default_factory=dict)
    xy_stage: DemoXYStage | None = None
    z_stage: DemoZStage | None = None
    light: DemoLightSource | None = None


_RIGS: dict[
    str, _Rig
] = {}  # hub label -> its devices (UniMMCore may init in any order)


def _rig(hub_label: str) -> _Rig:
    return _RIGS.setdefault(hub_label, _Rig())


def find_hub(label: str = "DemoHub") -> DemoHub:
    """The initialised demo hub with this label (for its peripherals and tests)."""
    hub = _RIGS[label].hub if label in _RIGS else None
    if hub is None:
        raise LookupError(
            f"No initialised DemoHub labelled {label!r}. Load the hub in the config "
            "(#py pyDevice,DemoHub,pairscope.sim.devices,DemoHub) and set each demo "
            "device's 'Hub' property to its label."
        )
    return hub


@dataclass(frozen=True, slots=True)
class Instant:
    """One trigger: the specimen time and the microscope state it was taken in."""

    index: int
    specimen_time_s: float
    wall_time: float
    stage_xy_um: tuple[float, float]
    z_um: float
    light_on: bool
    light_power: float
    open_until: float = 0.0  # wall time until which a snap may join this instant


class DemoHub(HubDevice):
    """Owns the simulated specimen, the optics and the trigger clock."""

    def __init__(self) -> None:
        super().__init__()
        # an RLock where the base Device declares a Lock
        self._lock = threading.RLock()  # type: ignore[assignment]
        self._seed = 0
        self._wavelength_nm = 520.0
        self._na = 1.2
        self._seconds_per_trigger = 0.1
        self._scene: Scene | None = None
        self._count = -1
        self._instant: Instant | None = None
        self._rendered: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._pulses: deque[Instant] = deque(maxlen=256)  # the trigger line
        self._pulse = threading.Condition(self._lock)

    def initialize(self) -> None:
        self._rebuild()
        _rig(self.get_label()).hub = self

    def shutdown(self) -> None:
        _RIGS.pop(self.get_label(), None)

    @property
    def rig(self) -> _Rig:
        return _rig(self.get_label())

    def get_installed_peripherals(self) -> Sequence[tuple[str, str]]:
        return (
            ("DemoCamera", "Simulated sCMOS camera behind the beam splitter"),
            ("DemoXYStage", "Simulated XY stage"),
            ("DemoZStage", "Simulated focus drive"),
            ("DemoLightSource", "Simulated excitation light source"),
        )

    # -- properties ------------------------------------------------------
    @pymm_property(limits=(0, 2**31 - 1), name="Seed")
    def seed(self) -> int:
        """Seed of the specimen: layout, motion, events and noise follow from it."""
        return self._seed

    @seed.setter  # type: ignore[no-redef]
    def seed(self, value: int) -> None:
        self._seed = int(value)
        self._rebuild()

    @pymm_property(limits=(300.0, 800.0), name="EmissionWavelength_nm")
    def wavelength_nm(self) -> float:
        return self._wavelength_nm

    @wavelength_nm.setter  # type: ignore[no-redef]
    def wavelength_nm(self, value: float) -> None:
        self._wavelength_nm = float(value)
        self._rebuild()

    @pymm_property(limits=(0.1, 1.49), name="NumericalAperture")
    def numerical_aperture(self) -> float:
        return self._na

    @numerical_aperture.setter  # type: ignore[no-redef]
    def numerical_aperture(self, value: float) -> None:
        self._na = float(value)
        self._rebuild()

    @pymm_property(limits=(0.0, 10.0), name="SpecimenSecondsPerTrigger")
    def seconds_per_trigger(self) -> float:
        """How far the specimen clock advances per trigger (its speed)."""
        return self._seconds_per_trigger

    @seconds_per_trigger.setter  # type: ignore[no-redef]
    def seconds_per_trigger(self, value: float) -> None:
        self._seconds_per_trigger = float(value)

    @pymm_property(allowed_values=("none", "unseen-structure"), name="Scenario")
    def scenario(self) -> str:
        """A drill for the trust monitor (see ``pairscope.sim._specimen``)."""
        return getattr(self, "_scenario", "none")

    @scenario.setter  # type: ignore[no-redef]
    def scenario(self, value: str) -> None:
        self._scenario = str(value)
        self._rebuild()

    @pymm_property(limits=(0.0, 1e6), name="ScenarioOnset_s")
    def scenario_onset_s(self) -> float:
        """Specimen time (s) from which the scenario's structures appear."""
        return getattr(self, "_scenario_onset_s", 0.0)

    @scenario_onset_s.setter  # type: ignore[no-redef]
    def scenario_onset_s(self, value: float) -> None:
        self._scenario_onset_s = float(value)
        self._rebuild()

    @pymm_property(allowed_values=KINDS, name="Specimen")
    def specimen_kind(self) -> str:
        """``cells`` (the default) or ``beads``, a bead slide (``pairscope.sim._specimen``)."""
        return getattr(self, "_specimen_kind", "cells")

    @specimen_kind.setter  # type: ignore[no-redef]
    def specimen_kind(self, value: str) -> None:
        self._specimen_kind = str(value)
        self._rebuild()

    @pymm_property(is_read_only=True, name="MatchedRods")
    def matched_rods(self) -> str:
        """Whether the two-point pairs have their control rods (recorded in every
        run, so a run acquired before rods existed is rebuilt without them)."""
        return "yes"

    @pymm_property(is_read_only=True, name="RayleighDistance_um")
    def rayleigh_um(self) -> float:
        return self.optics.rayleigh_um

    @pymm_property(is_read_only=True, name="TriggerCount")
    def trigger_count(self) -> int:
        return self._count + 1

    @pymm_property(allowed_values=("Idle", "Fire"), name="Trigger")
    def trigger(self) -> str:
        """Set to ``Fire`` to start one exposure on every camera in Hub mode."""
        return "Idle"

    @trigger.setter  # type: ignore[no-redef]
    def trigger(self, value: str) -> None:
        if value == "Fire":
            self.fire()

    # -- simulation ------------------------------------------------------
    @property
    def optics(self) -> Optics:
        return Optics(self._wavelength_nm / 1000.0, self._na)

    @property
    def scene(self) -> Scene:
        if self._scene is None:
            self._rebuild()
        assert self._scene is not None
        return self._scene

    def _rebuild(self) -> None:
        with self._lock:
            optics = self.optics
            specimen = Specimen(
                self._seed,
                rayleigh_um=optics.rayleigh_um,
                scenario=self.scenario,
                scenario_onset_s=self.scenario_onset_s,
                kind=self.specimen_kind,
            )
            self._scene = Scene(specimen, optics)
            self._rendered = OrderedDict()

    @property
    def latest(self) -> Instant | None:
        return self._instant

    def fire(self, exposure_ms: float = 0.0) -> Instant:
        """Send a pulse on the trigger line: one new specimen instant, with the
        microscope state frozen.  A snap may join it for ``exposure_ms``."""
        with self._lock:
            self._count += 1
            rig = self.rig
            xy = rig.xy_stage.get_position_um() if rig.xy_stage else (0.0, 0.0)
            z = rig.z_stage.get_position_um() if rig.z_stage else 0.0
            light = rig.light
            self._instant = Instant(
                index=self._count,
                specimen_time_s=self._count * self._seconds_per_trigger,
                wall_time=time.perf_counter(),
                stage_xy_um=(float(xy[0]), float(xy[1])),
                z_um=float(z),
                light_on=light.get_open() if light else True,
                light_power=light.power_fraction if light else 1.0,
            )
            self._instant = replace(
                self._instant,
                open_until=self._instant.wall_time + exposure_ms / 1000.0,
            )
            self._pulses.append(self._instant)
            self._pulse.notify_all()
            return self._instant

    def join_or_fire(self, last_read: int, exposure_ms: float) -> Instant:
        """The instant a freely triggered exposure starting now sees: the open one
        (another camera is still exposing it) if this camera has not read it, else a
        new pulse."""
        with self._lock:
            latest = self._instant
            if (
                latest is not None
                and latest.index > last_read
                and time.perf_counter() < latest.open_until
            ):
                return latest
            return self.fire(exposure_ms)

    def next_pulse(self, after: int, timeout_s: float) -> Instant | None:
        """The first pulse on the line with index > ``after`` (waits for it)."""
        deadline = time.perf_counter() + timeout_s
        with self._pulse:
            while True:
                for instant in self._pulses:
                    if instant.index > after:
                        return instant
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return None
                self._pulse.wait(remaining)

    def photons_per_ms(self, instant: Instant, camera_label: str) -> np.ndarray:
        """Expected photons per sensor pixel per ms at full power, for one camera.

        The instant is rendered once, for all attached cameras together.
        """
        with self._lock:
            rendered = self._rendered.get(instant.index)
            if rendered is None or camera_label not in rendered:
                cameras = self.rig.cameras
                labels = list(cameras)
                images = self.scene.render(
                    instant.specimen_time_s,
                    instant.stage_xy_um,
                    instant.z_um,
                    [cameras[lbl].geometry for lbl in labels],
                )
                rendered = dict(zip(labels, images, strict=True))
                self._rendered[instant.index] = rendered
                while len(self._rendered) > 4:  # a few instants may be in flight
                    self._rendered.popitem(last=False)
            return rendered[camera_label]


class _HubPeripheral:
    """Mixin: a ``Hub`` property naming the demo hub this device belongs to."""

    _hub_label = "DemoHub"

    @property
    def hub(self) -> DemoHub:
        return find_hub(self._hub_label)


class DemoCamera(_HubPeripheral, CameraDevice):
    """A 16-bit sCMOS-like camera seeing the hub's specimen through the splitter.

    ``SplitFraction`` is the share of the emitted light reaching this camera
    (0.1 for the low-dose arm of a 90:10 splitter); ``Offset*_um`` and
    ``Magnification`` model its misregistration against the other camera.
    """

    def __init__(self) -> None:
        super().__init__()
        self._exposure = 20.0
        self._binning = 1
        self._sensor = Sensor()
        self._sensor_size = (512, 512)
        self._pixel_um = 0.1
        self._split = 1.0
        self._offset_um = (0.0, 0.0)
        self._scale = 1.0
        self._trigger_mode = "Internal"
        self._real_time = True
        self._last_index = -1
        self._fail_after = -1
        self._frames_read = 0
        self._interval_ms = 0.0
        self._cable_plugged = True
        self._miss_every = 0
        self._pulses_seen = 0
        self._hang_after = -1
        self._released = threading.Event()  # set at shutdown: a hung camera returns

    def initialize(self) -> None:
        _rig(self._hub_label).cameras[self.get_label()] = self

    def shutdown(self) -> None:
        self._released.set()
        _rig(self._hub_label).cameras.pop(self.get_label(), None)

    # -- standard camera API --------------------------------------------
    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        # config-file values reach standard-property setters as strings
        exposure = float(exposure)
        if exposure <= 0:
            raise ValueError(f"Exposure must be positive, got {exposure} ms.")
        self._exposure = float(exposure)

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        value = int(value)
        if value not in (1, 2, 4):
            raise ValueError(f"Binning {value} is not supported; use 1, 2 or 4.")
        self._binning = value

    def get_gain(self) -> float:
        """Conversion gain in electrons per ADU."""
        return self._sensor.gain_e_per_adu

    def set_gain(self, value: float) -> None:
        self._replace_sensor(gain_e_per_adu=float(value))

    def get_offset(self) -> float:
        return self._sensor.offset_adu

    def set_offset(self, value: float) -> None:
        self._replace_sensor(offset_adu=float(value))

    def shape(self) -> tuple[int, int]:
        h, w = self._sensor_size
        return (h // self._binning, w // self._binning)

    def dtype(self) -> Any:
        return np.uint16

    # -- demo-specific properties -------------------------------------
    @pymm_property(limits=(0.0, 20.0), name="ReadNoise_e")
    def read_noise_e(self) -> float:
        return self._sensor.read_noise_e

    @read_noise_e.setter  # type: ignore[no-redef]
    def read_noise_e(self, value: float) -> None:
        self._replace_sensor(read_noise_e=float(value))

    @pymm_property(limits=(0.01, 1.0), name="QuantumEfficiency")
    def quantum_efficiency(self) -> float:
        return self._sensor.quantum_efficiency

    @quantum_efficiency.setter  # type: ignore[no-redef]
    def quantum_efficiency(self, value: float) -> None:
        self._replace_sensor(quantum_efficiency=float(value))

    @pymm_property(limits=(0.0, 1.0), name="SplitFraction")
    def split_fraction(self) -> float:
        return self._split

    @split_fraction.setter  # type: ignore[no-redef]
    def split_fraction(self, value: float) -> None:
        self._split = float(value)

    @pymm_property(limits=(0.01, 10.0), name="PixelSize_um")
    def pixel_size_um(self) -> float:
        """Unbinned pixel size in the sample plane."""
        return self._pixel_um

    @pixel_size_um.setter  # type: ignore[no-redef]
    def pixel_size_um(self, value: float) -> None:
        self._pixel_um = float(value)

    # limits, not allowed_values: UniMMCore compares allowed ints with cfg strings
    @pymm_property(limits=(64, 4096), name="SensorSize")
    def sensor_size(self) -> int:
        """Square sensor, unbinned pixels per side (a multiple of 4)."""
        return self._sensor_size[0]

    @sensor_size.setter  # type: ignore[no-redef]
    def sensor_size(self, value: int) -> None:
        value = int(value)
        if value % 4:
            raise ValueError(f"SensorSize must be a multiple of 4, got {value}.")
        self._sensor_size = (value, value)

    @pymm_property(limits=(-50.0, 50.0), name="OffsetX_um")
    def offset_x_um(self) -> float:
        return self._offset_um[0]

    @offset_x_um.setter  # type: ignore[no-redef]
    def offset_x_um(self, value: float) -> None:
        self._offset_um = (float(value), self._offset_um[1])

    @pymm_property(limits=(-50.0, 50.0), name="OffsetY_um")
    def offset_y_um(self) -> float:
        return self._offset_um[1]

    @offset_y_um.setter  # type: ignore[no-redef]
    def offset_y_um(self, value: float) -> None:
        self._offset_um = (self._offset_um[0], float(value))

    @pymm_property(limits=(0.8, 1.25), name="Magnification")
    def magnification(self) -> float:
        """Relative magnification of this camera's path (1 = nominal)."""
        return 1.0 / self._scale

    @magnification.setter  # type: ignore[no-redef]
    def magnification(self, value: float) -> None:
        self._scale = 1.0 / float(value)

    @pymm_property(allowed_values=("Internal", "External"), name="TriggerMode")
    def trigger_mode(self) -> str:
        """``Internal``: free-running (sequences fire the line: exposure-out);
        ``External``: expose on each pulse of the trigger line."""
        return self._trigger_mode

    @trigger_mode.setter  # type: ignore[no-redef]
    def trigger_mode(self, value: str) -> None:
        self._trigger_mode = str(value)

    @pymm_property(allowed_values=("Connected", "Unplugged"), name="TriggerCable")
    def trigger_cable(self) -> str:
        """Drill: ``Unplugged`` and an external-trigger camera free-runs."""
        return "Connected" if self._cable_plugged else "Unplugged"

    @trigger_cable.setter  # type: ignore[no-redef]
    def trigger_cable(self, value: str) -> None:
        self._cable_plugged = value == "Connected"

    @pymm_property(limits=(0, 1000), name="MissTriggerEvery")
    def miss_trigger_every(self) -> int:
        """Drill: in external trigger mode, miss every N-th pulse (0: never)."""
        return self._miss_every

    @miss_trigger_every.setter  # type: ignore[no-redef]
    def miss_trigger_every(self, value: int) -> None:
        self._miss_every = int(value)
        self._pulses_seen = 0

    @pymm_property(limits=(-1, 2**31 - 1), name="HangAfterFrames")
    def hang_after(self) -> int:
        """Drill: stop delivering frames (without an error) after this many."""
        return self._hang_after

    @hang_after.setter  # type: ignore[no-redef]
    def hang_after(self, value: int) -> None:
        self._hang_after = int(value)
        self._frames_read = 0

    @pymm_property(allowed_values=("Off", "On"), name="RealTimeExposure")
    def real_time(self) -> str:
        """``On``: a frame is ready only ``Exposure`` ms after its trigger."""
        return "On" if self._real_time else "Off"

    @real_time.setter  # type: ignore[no-redef]
    def real_time(self, value: str) -> None:
        self._real_time = value == "On"

    @pymm_property(is_read_only=True, name="LastTriggerIndex")
    def last_trigger_index(self) -> int:
        return self._last_index

    @pymm_property(limits=(-1, 2**31 - 1), name="FailAfterFrames")
    def fail_after(self) -> int:
        """Fault injection: raise a camera error after this many frames (-1: never)."""
        return self._fail_after

    @fail_after.setter  # type: ignore[no-redef]
    def fail_after(self, value: int) -> None:
        self._fail_after = int(value)
        self._frames_read = 0

    @pymm_property(name="Hub", is_pre_init=True)
    def hub_label(self) -> str:
        return self._hub_label

    @hub_label.setter  # type: ignore[no-redef]
    def hub_label(self, value: str) -> None:
        self._hub_label = str(value)

    # -- simulation ----------------------------------------------------
    def _replace_sensor(self, **changes: float) -> None:
        self._sensor = replace(self._sensor, **changes)

    @property
    def sensor(self) -> Sensor:
        return self._sensor

    @property
    def geometry(self) -> SensorGeometry:
        return SensorGeometry(
            self._sensor_size, self._pixel_um, self._offset_um, self._scale
        )

    def expected_photons(self, instant: Instant) -> np.ndarray:
        """Expected photons per unbinned pixel for this camera at ``instant``."""
        if not instant.light_on:
            return np.zeros(self._sensor_size, np.float32)
        dose = self._exposure * instant.light_power * self._split
        return self.hub.photons_per_ms(instant, self.get_label()) * np.float32(dose)

    def set_sequence_interval_ms(self, interval_ms: float) -> None:
        """The frame interval of the next sequence (UniMMCore does not pass
        ``startSequenceAcquisition``'s interval to Python cameras)."""
        self._interval_ms = max(float(interval_ms), 0.0)

    def _external(self) -> bool:
        return self._trigger_mode == "External" and self._cable_plugged

    def _wait_pulse(self, timeout_s: float) -> Instant:
        """The next pulse this camera exposes on (external trigger).  Like real
        cameras it gives up after a trigger timeout (ending the sequence)."""
        after = self._last_index
        deadline = time.perf_counter() + timeout_s
        while True:
            instant = self.hub.next_pulse(after, timeout_s=0.1)
            if self._released.is_set() or time.perf_counter() > deadline:
                raise _SequenceEnded
            if instant is None:
                continue
            after = instant.index
            self._pulses_seen += 1
            if self._miss_every and self._pulses_seen % self._miss_every == 0:
                continue  # the drill: this trigger is lost on the cable
            if self._real_time and instant.wall_time < self._busy_until:
                continue  # still exposing the previous frame: a real camera misses it
            return instant

    def _snap_instant(self) -> Instant:
        if self._external():
            instant = self.hub.next_pulse(self._last_index, timeout_s=5.0)
            if instant is None:
                raise RuntimeError(
                    f"Camera {self.get_label()!r} waited 5 s for a trigger in "
                    "TriggerMode=External; fire the trigger or set Internal."
                )
            return instant
        return self.hub.join_or_fire(self._last_index, self._exposure)

    _busy_until = 0.0
    _sequence_t0 = 0.0

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray]
    ) -> Iterator[Mapping]:
        if n == 1 and not self._interval_ms:  # a snap: its exposure starts now
            start = time.perf_counter()
            yield self._read_frame(get_buffer, self._snap_instant(), start)
            return
        remaining = n if n is not None else -1
        period_s = max(self._interval_ms, self._exposure) / 1000.0
        if self._trigger_mode == "External" and not self._cable_plugged:
            period_s = (self._exposure + 2.0) / 1000.0  # no trigger: its own pace
        next_start = self._sequence_t0 = time.perf_counter()
        self._busy_until = 0.0
        trigger_timeout_s = 3 * period_s + 1.0
        try:
            while remaining != 0:
                if self._external():
                    instant = self._wait_pulse(trigger_timeout_s)
                else:  # free-running at the interval
                    if self._real_time:
                        _sleep_until(next_start)
                    if self._trigger_mode == "External":  # unplugged: not the leader,
                        # it sees whatever instant is being exposed when it starts
                        instant = self.hub.join_or_fire(
                            self._last_index, self._exposure
                        )
                    else:  # the leader: its exposure-out fires the line
                        instant = self.hub.fire(self._exposure)
                    next_start = instant.wall_time + period_s
                yield self._read_frame(get_buffer, instant)
                remaining -= 1
        except _SequenceEnded:
            return  # trigger timeout, or the camera was shut down while hanging
        finally:
            self._interval_ms = 0.0

    def _read_frame(
        self,
        get_buffer: Callable[[Sequence[int], Any], np.ndarray],
        instant: Instant,
        start: float | None = None,
    ) -> Mapping:
        self._frames_read += 1
        if self._fail_after >= 0 and self._frames_read > self._fail_after:
            raise RuntimeError(
                f"Camera {self.get_label()!r}: simulated hardware fault "
                f"(FailAfterFrames={self._fail_after})."
            )
        if self._hang_after >= 0 and self._frames_read > self._hang_after:
            self._released.wait()  # the drill: no frame, no error, until shutdown
            raise _SequenceEnded
        exposure_start = max(start or 0.0, instant.wall_time)
        self._busy_until = exposure_start + self._exposure / 1000
        photons = self.expected_photons(instant)
        seed = (
            self.hub.scene.specimen.seed,
            instant.index,
            _label_key(self.get_label()),
        )
        frame = self._sensor.expose(photons, self._binning, np.random.default_rng(seed))
        buf = get_buffer(frame.shape, np.uint16)
        buf[:] = frame
        self._last_index = instant.index
        if self._real_time:  # read out when the exposure ends, not before
            _sleep_until(self._busy_until)
        return {
            # the camera's own clock: exposure start since its sequence started
            EXPOSURE_START_KEY: f"{(exposure_start - self._sequence_t0) * 1000:.3f}",
            "TriggerIndex": str(instant.index),
            "SpecimenTime_s": f"{instant.specimen_time_s:.6f}",
        }


EXPOSURE_START_KEY = "ExposureStartTime-ms"


class _SequenceEnded(Exception):
    """A sequence ends without a frame (trigger timeout, shutdown)."""


def _label_key(label: str) -> int:
    return zlib.crc32(label.encode())


def _sleep_until(t: float) -> None:
    wait = t - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


class _Stickable:
    """Mixin: a ``Stuck`` property (drill: the stage ignores moves)."""

    _stuck = False

    @pymm_property(allowed_values=("No", "Yes"), name="Stuck")
    def stuck(self) -> str:
        return "Yes" if self._stuck else "No"

    @stuck.setter  # type: ignore[no-redef]
    def stuck(self, value: str) -> None:
        self._stuck = value == "Yes"


class DemoXYStage(_Stickable, _HubPeripheral, XYStageDevice):
    """An XY stage that moves the field of view over the specimen."""

    def __init__(self) -> None:
        super().__init__()
        self._xy = (0.0, 0.0)

    def initialize(self) -> None:
        _rig(self._hub_label).xy_stage = self

    def set_position_um(self, x: float, y: float) -> None:
        if not self._stuck:
            self._xy = (float(x), float(y))

    def get_position_um(self) -> tuple[float, float]:
        return self._xy

    def set_origin_x(self) -> None:
        self._xy = (0.0, self._xy[1])

    def set_origin_y(self) -> None:
        self._xy = (self._xy[0], 0.0)

    def home(self) -> None:
        self._xy = (0.0, 0.0)

    def stop(self) -> None:
        pass


class DemoZStage(_Stickable, _HubPeripheral, StageDevice):
    """A focus drive: the specimen is in focus at Z = 0 µm; defocus blurs."""

    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0

    def initialize(self) -> None:
        _rig(self._hub_label).z_stage = self

    def set_position_um(self, val: float) -> None:
        if not self._stuck:
            self._z = float(val)

    def get_position_um(self) -> float:
        return self._z

    def set_origin(self) -> None:
        self._z = 0.0

    def home(self) -> None:
        self._z = 0.0

    def stop(self) -> None:
        pass


class DemoLightSource(_HubPeripheral, ShutterDevice):
    """An excitation source: open/closed, and a power in percent that scales dose."""

    def __init__(self) -> None:
        super().__init__()
        self._open = False
        self._power = 100.0

    def initialize(self) -> None:
        _rig(self._hub_label).light = self

    def get_open(self) -> bool:
        return self._open

    def set_open(self, open: bool) -> None:
        self._open = bool(open)

    @pymm_property(limits=(0.0, 100.0), name="Power_percent")
    def power(self) -> float:
        return self._power

    @power.setter  # type: ignore[no-redef]
    def power(self, value: float) -> None:
        self._power = float(value)

    @property
    def power_fraction(self) -> float:
        return self._power / 100.0
