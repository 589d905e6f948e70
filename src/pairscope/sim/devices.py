"""Pure-Python Micro-Manager devices of the demo microscope, for ``UniMMCore``.

Load them from a config file with ``#py pyDevice,<label>,pairscope.sim.devices,<Class>``
lines (see ``hardware_configs/demo_dual_camera.cfg``).  The hub owns the specimen
and its clock; every trigger is one specimen instant, rendered once for all the
cameras attached to the hub, so the two detectors behind the virtual beam splitter
see the same instant.  All physical parameters are device properties.

Triggering: in ``TriggerMode=Hub`` a camera reads out the newest hub trigger it has
not read yet, and fires a new trigger itself when there is none (so a snap always
works).  Setting the hub's ``Trigger`` property to ``Fire`` fires one explicitly, as a
TTL line from a DAQ would.  ``TriggerMode=Internal`` fires a new instant per frame.
"""

from __future__ import annotations

import threading
import time
import zlib
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
from ._specimen import Specimen


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


class DemoHub(HubDevice):
    """Owns the simulated specimen, the optics and the trigger clock."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._seed = 0
        self._wavelength_nm = 520.0
        self._na = 1.2
        self._seconds_per_trigger = 0.1
        self._scene: Scene | None = None
        self._count = -1
        self._instant: Instant | None = None
        self._rendered: dict[str, np.ndarray] = {}

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

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = int(value)
        self._rebuild()

    @pymm_property(limits=(300.0, 800.0), name="EmissionWavelength_nm")
    def wavelength_nm(self) -> float:
        return self._wavelength_nm

    @wavelength_nm.setter
    def wavelength_nm(self, value: float) -> None:
        self._wavelength_nm = float(value)
        self._rebuild()

    @pymm_property(limits=(0.1, 1.49), name="NumericalAperture")
    def numerical_aperture(self) -> float:
        return self._na

    @numerical_aperture.setter
    def numerical_aperture(self, value: float) -> None:
        self._na = float(value)
        self._rebuild()

    @pymm_property(limits=(0.0, 10.0), name="SpecimenSecondsPerTrigger")
    def seconds_per_trigger(self) -> float:
        """How far the specimen clock advances per trigger (its speed)."""
        return self._seconds_per_trigger

    @seconds_per_trigger.setter
    def seconds_per_trigger(self, value: float) -> None:
        self._seconds_per_trigger = float(value)

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

    @trigger.setter
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
            specimen = Specimen(self._seed, rayleigh_um=optics.rayleigh_um)
            self._scene = Scene(specimen, optics)
            self._rendered.clear()

    @property
    def latest(self) -> Instant | None:
        return self._instant

    def fire(self) -> Instant:
        """Advance the specimen clock by one trigger and freeze the microscope state."""
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
            self._rendered.clear()
            return self._instant

    def photons_per_ms(self, instant: Instant, camera_label: str) -> np.ndarray:
        """Expected photons per sensor pixel per ms at full power, for one camera.

        The instant is rendered once, for all attached cameras together.
        """
        with self._lock:
            if instant is not self._instant:
                raise RuntimeError(
                    f"Trigger {instant.index} was overwritten by trigger "
                    f"{self._count} before camera {camera_label!r} read it out."
                )
            if camera_label not in self._rendered:
                cameras = self.rig.cameras
                labels = list(cameras)
                images = self.scene.render(
                    instant.specimen_time_s,
                    instant.stage_xy_um,
                    instant.z_um,
                    [cameras[lbl].geometry for lbl in labels],
                )
                self._rendered = dict(zip(labels, images, strict=True))
            return self._rendered[camera_label]


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
        self._trigger_mode = "Hub"
        self._real_time = False
        self._last_index = -1
        self._fail_after = -1
        self._frames_read = 0

    def initialize(self) -> None:
        _rig(self._hub_label).cameras[self.get_label()] = self

    def shutdown(self) -> None:
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

    @read_noise_e.setter
    def read_noise_e(self, value: float) -> None:
        self._replace_sensor(read_noise_e=float(value))

    @pymm_property(limits=(0.01, 1.0), name="QuantumEfficiency")
    def quantum_efficiency(self) -> float:
        return self._sensor.quantum_efficiency

    @quantum_efficiency.setter
    def quantum_efficiency(self, value: float) -> None:
        self._replace_sensor(quantum_efficiency=float(value))

    @pymm_property(limits=(0.0, 1.0), name="SplitFraction")
    def split_fraction(self) -> float:
        return self._split

    @split_fraction.setter
    def split_fraction(self, value: float) -> None:
        self._split = float(value)

    @pymm_property(limits=(0.01, 10.0), name="PixelSize_um")
    def pixel_size_um(self) -> float:
        """Unbinned pixel size in the sample plane."""
        return self._pixel_um

    @pixel_size_um.setter
    def pixel_size_um(self, value: float) -> None:
        self._pixel_um = float(value)

    # limits, not allowed_values: UniMMCore compares allowed ints with cfg strings
    @pymm_property(limits=(64, 4096), name="SensorSize")
    def sensor_size(self) -> int:
        """Square sensor, unbinned pixels per side (a multiple of 4)."""
        return self._sensor_size[0]

    @sensor_size.setter
    def sensor_size(self, value: int) -> None:
        value = int(value)
        if value % 4:
            raise ValueError(f"SensorSize must be a multiple of 4, got {value}.")
        self._sensor_size = (value, value)

    @pymm_property(limits=(-50.0, 50.0), name="OffsetX_um")
    def offset_x_um(self) -> float:
        return self._offset_um[0]

    @offset_x_um.setter
    def offset_x_um(self, value: float) -> None:
        self._offset_um = (float(value), self._offset_um[1])

    @pymm_property(limits=(-50.0, 50.0), name="OffsetY_um")
    def offset_y_um(self) -> float:
        return self._offset_um[1]

    @offset_y_um.setter
    def offset_y_um(self, value: float) -> None:
        self._offset_um = (self._offset_um[0], float(value))

    @pymm_property(limits=(0.8, 1.25), name="Magnification")
    def magnification(self) -> float:
        """Relative magnification of this camera's path (1 = nominal)."""
        return 1.0 / self._scale

    @magnification.setter
    def magnification(self, value: float) -> None:
        self._scale = 1.0 / float(value)

    @pymm_property(allowed_values=("Hub", "Internal"), name="TriggerMode")
    def trigger_mode(self) -> str:
        return self._trigger_mode

    @trigger_mode.setter
    def trigger_mode(self, value: str) -> None:
        self._trigger_mode = str(value)

    @pymm_property(allowed_values=("Off", "On"), name="RealTimeExposure")
    def real_time(self) -> str:
        """``On``: a frame is ready only ``Exposure`` ms after its trigger."""
        return "On" if self._real_time else "Off"

    @real_time.setter
    def real_time(self, value: str) -> None:
        self._real_time = value == "On"

    @pymm_property(is_read_only=True, name="LastTriggerIndex")
    def last_trigger_index(self) -> int:
        return self._last_index

    @pymm_property(limits=(-1, 2**31 - 1), name="FailAfterFrames")
    def fail_after(self) -> int:
        """Fault injection: raise a camera error after this many frames (-1: never)."""
        return self._fail_after

    @fail_after.setter
    def fail_after(self, value: int) -> None:
        self._fail_after = int(value)
        self._frames_read = 0

    @pymm_property(name="Hub", is_pre_init=True)
    def hub_label(self) -> str:
        return self._hub_label

    @hub_label.setter
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

    def _next_instant(self) -> Instant:
        hub = self.hub
        latest = hub.latest
        if self._trigger_mode == "Hub" and latest and latest.index > self._last_index:
            return latest
        return hub.fire()

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray]
    ) -> Iterator[Mapping]:
        remaining = n if n is not None else -1
        while remaining != 0:
            yield self._read_frame(get_buffer)
            remaining -= 1

    def _read_frame(self, get_buffer: Callable[[Sequence[int], Any], np.ndarray]):
        if self._fail_after >= 0:
            self._frames_read += 1
            if self._frames_read > self._fail_after:
                raise RuntimeError(
                    f"Camera {self.get_label()!r}: simulated hardware fault "
                    f"(FailAfterFrames={self._fail_after})."
                )
        instant = self._next_instant()
        if self._real_time:
            wait = instant.wall_time + self._exposure / 1000 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
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
        return {
            "TriggerIndex": str(instant.index),
            "SpecimenTime_s": f"{instant.specimen_time_s:.6f}",
        }


def _label_key(label: str) -> int:
    return zlib.crc32(label.encode())


class DemoXYStage(_HubPeripheral, XYStageDevice):
    """An XY stage that moves the field of view over the specimen."""

    def __init__(self) -> None:
        super().__init__()
        self._xy = (0.0, 0.0)

    def initialize(self) -> None:
        _rig(self._hub_label).xy_stage = self

    def set_position_um(self, x: float, y: float) -> None:
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


class DemoZStage(_HubPeripheral, StageDevice):
    """A focus drive: the specimen is in focus at Z = 0 µm; defocus blurs."""

    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0

    def initialize(self) -> None:
        _rig(self._hub_label).z_stage = self

    def set_position_um(self, val: float) -> None:
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

    @power.setter
    def power(self, value: float) -> None:
        self._power = float(value)

    @property
    def power_fraction(self) -> float:
        return self._power / 100.0
