"""A rig: one Micro-Manager core per camera, described by a small YAML file.

One core cannot sequence-acquire a binned and an unbinned camera (its one circular
buffer has one frame size), so pairscope runs a *primary* core (the low-dose
camera, stages, shutter, light) and one more core per other detector, each loaded
from its own config.  ``open_rig`` takes a rig file or a single config (a one-core
rig: sequential, Multi Camera and alternating modes) and releases every core.

Rig file (version 1)::

    version: 1
    name: demo
    cores:
      - {name: lowdose, config: demo_lowdose.cfg, camera: LowDoseCam, role: lowdose}
      - {name: reference, config: demo_reference.cfg, camera: ReferenceCam,
         role: reference}
    trigger:            # hardware trigger wiring (mode 'triggered')
      leader: lowdose   # the core whose camera's exposure-out drives the line
      follower_property: TriggerMode
      follower_value: External
    pairing: {mode: triggered}   # pairscope.config.AcquisitionSettings
    camera_calibration:          # optional: 'pairscope calibrate-camera' hooks
      dark: [[Lamp, State, 0]]   # [device, property, value] before the dark series
      flat: [[Lamp, State, 1]]   # ... and before the flat series (restored after)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pymmcore_plus import CMMCorePlus, DeviceType

from ..config import AcquisitionSettings
from ..errors import ConfigError
from ..rig import DeclaredOptics, DeclaredPhotometry
from ._core import create_core, load_config, release_core

RIG_SUFFIXES = (".yaml", ".yml")
Role = Literal["lowdose", "reference"]


class CoreSpec(BaseModel):
    """One core of a rig: its config and the camera it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    config: Path
    camera: str
    role: Role
    #: the camera's photometry from its data sheet or EMVA 1288 report (else
    #: pairscope measures it; never read from its Gain property)
    photometry: DeclaredPhotometry | None = None


class TriggerWiring(BaseModel):
    """How the cameras are wired for hardware-triggered sequences."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    leader: str | None = Field(
        None, description="Core whose camera leads (default: the low-dose core)."
    )
    follower_property: str | None = Field(
        None, description="Follower camera property that selects external trigger."
    )
    follower_value: str | None = None
    leader_property: str | None = None
    leader_value: str | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TriggerWiring:
        for prop, value in (
            (self.follower_property, self.follower_value),
            (self.leader_property, self.leader_value),
        ):
            if (prop is None) != (value is None):
                raise ValueError(
                    "give a trigger property together with its value, e.g. "
                    "follower_property: TriggerMode, follower_value: External"
                )
        return self


Setting = tuple[str, str, str | int | float]


class CameraCalibration(BaseModel):
    """Device settings ``pairscope calibrate-camera`` applies before its dark and
    its flat series (after each series' exposure is set) and restores afterwards:
    ``[device, property, value]`` each (on real hardware the dark series closes the
    shutter and the flats need a uniform slide; these are for what that cannot do).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dark: tuple[Setting, ...] = ()
    flat: tuple[Setting, ...] = ()


class RigSpec(BaseModel):
    """The rig file (YAML), versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    name: str = "rig"
    cores: tuple[CoreSpec, ...] = Field(min_length=2)
    trigger: TriggerWiring = TriggerWiring()
    pairing: AcquisitionSettings = AcquisitionSettings()
    #: objective NA, emission wavelength, beam-splitter ratio (each optional)
    optics: DeclaredOptics = DeclaredOptics()
    camera_calibration: CameraCalibration = CameraCalibration()

    @model_validator(mode="after")
    def _roles(self) -> RigSpec:
        names = [c.name for c in self.cores]
        if len(set(names)) != len(names):
            raise ValueError(f"core names must be unique, got {names}")
        lows = [c.name for c in self.cores if c.role == "lowdose"]
        if len(lows) != 1:
            raise ValueError(
                f"exactly one core must have role 'lowdose' (its camera is the binned "
                f"low-dose one); got {lows or 'none'}"
            )
        if self.trigger.leader is not None and self.trigger.leader not in names:
            raise ValueError(
                f"trigger.leader {self.trigger.leader!r} is not a core; cores: {names}"
            )
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> RigSpec:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"Rig file not found: {path}. Pass a rig .yaml (see "
                "hardware_configs/demo_rig.yaml) or a Micro-Manager .cfg."
            )
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {_one_line(exc)}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping (version, cores, ...).")
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_first_error(exc)}") from exc
        cores = tuple(
            c.model_copy(update={"config": (path.parent / c.config).resolve()})
            for c in spec.cores
        )
        seen: dict[Path, str] = {}
        for c in cores:
            if c.config in seen:
                raise ConfigError(
                    f"{path}: cores {seen[c.config]!r} and {c.name!r} both load "
                    f"{c.config.name}: its camera (and every device in it) would be "
                    "opened twice, and real hardware can be opened by one core "
                    "only. Give each core its own config with its own camera."
                )
            seen[c.config] = c.name
        return spec.model_copy(update={"cores": cores})


@dataclass(eq=False)
class RigCore:
    """A loaded core with its camera and role."""

    name: str
    core: CMMCorePlus
    camera: str
    role: Role
    config: str | Path | None = None


@dataclass(eq=False)
class Rig:
    """The cores of one acquisition; ``cores[0]`` is the primary (low-dose) core."""

    cores: list[RigCore]
    spec: RigSpec | None = None
    path: Path | None = None
    owned: bool = field(default=False, repr=False)

    @property
    def primary(self) -> RigCore:
        return self.cores[0]

    @property
    def multi_core(self) -> bool:
        return len(self.cores) > 1

    def core_named(self, name: str) -> RigCore:
        return next(c for c in self.cores if c.name == name)

    def core_of(self, camera: str) -> RigCore:
        """The core that holds camera ``camera``."""
        for rc in self.cores:
            if camera in rc.core.getLoadedDevicesOfType(DeviceType.Camera):
                return rc
        raise ConfigError(f"No core of this rig has a camera {camera!r}.")

    @classmethod
    def from_core(cls, core: CMMCorePlus, config: str | Path | None = None) -> Rig:
        """A one-core rig (its cameras are chosen later, by the pairing mode)."""
        return cls(
            [RigCore("primary", core, core.getCameraDevice(), "lowdose", config)]
        )

    def describe(self) -> dict[str, object]:
        """What run.json records about the rig."""
        return {
            "name": self.spec.name if self.spec else "single-core",
            "rig_file": str(self.path) if self.path else None,
            "cores": [
                {
                    "name": c.name,
                    "camera": c.camera,
                    "role": c.role,
                    "config": str(c.config) if c.config else None,
                }
                for c in self.cores
            ],
            "trigger": self.spec.trigger.model_dump() if self.spec else None,
        }


def is_rig_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RIG_SUFFIXES


@contextmanager
def open_rig(
    path: str | Path,
    *,
    allow_local_devices: bool = False,
    announce: Callable[[str], None] | None = None,
) -> Iterator[Rig]:
    """Load a rig file (one core per config) or a single config; release all.

    ``allow_local_devices`` / ``announce``: see :func:`load_config`.
    """
    path = Path(path).expanduser()
    opts: dict[str, Any] = {
        "allow_local_devices": allow_local_devices,
        "announce": announce,
    }
    with ExitStack() as stack:
        if not is_rig_file(path):
            core = create_core()
            stack.callback(release_core, core)
            load_config(core, path, **opts)
            yield Rig.from_core(core, path)
            return
        spec = RigSpec.from_file(path)
        ordered = sorted(spec.cores, key=lambda c: c.role != "lowdose")
        cores: list[RigCore] = []
        for cs in ordered:
            core = create_core()
            stack.callback(release_core, core)
            load_config(core, cs.config, **opts)
            _check_camera(core, cs)
            core.setCameraDevice(cs.camera)
            cores.append(RigCore(cs.name, core, cs.camera, cs.role, cs.config))
        rig = Rig(cores, spec, path, owned=True)
        check_rig(rig)
        yield rig


def _check_camera(core: CMMCorePlus, cs: CoreSpec) -> None:
    cameras = list(core.getLoadedDevicesOfType(DeviceType.Camera))
    if cs.camera not in cameras:
        raise ConfigError(
            f"Core {cs.name!r}: camera {cs.camera!r} is not in {cs.config.name} "
            f"(its cameras: {cameras or 'none'}). Fix 'camera' in the rig file."
        )


_SHARED_OK = {DeviceType.Core, DeviceType.Camera}


def check_rig(rig: Rig) -> None:
    """Refuse what real hardware cannot do: a device or a serial port opened by two
    cores, or a trigger mode a camera does not have."""
    seen: dict[tuple[str, str], str] = {}
    ports: dict[str, str] = {}
    for rc in rig.cores:
        core = rc.core
        for label in core.getLoadedDevices():
            dtype = core.getDeviceType(label)
            if dtype in _SHARED_OK:
                continue
            key = (core.getDeviceLibrary(label), core.getDeviceName(label))
            if key in seen and seen[key] != rc.name:
                raise ConfigError(
                    f"Device {label!r} ({key[0]} {key[1]}) is loaded in core "
                    f"{seen[key]!r} and in core "
                    f"{rc.name!r}: real hardware can be opened by one core only. Keep "
                    "it in the primary (low-dose) core's config and remove it from "
                    "the other."
                )
            seen[key] = rc.name
            if core.hasProperty(label, "Port"):
                port = core.getProperty(label, "Port")
                if port and port != "Undefined":
                    if port in ports and ports[port] != rc.name:
                        raise ConfigError(
                            f"Serial port {port!r} is used in core {ports[port]!r} and "
                            f"in core {rc.name!r} ({label}): a port can be opened by "
                            "one core only. Move the devices on it into one config."
                        )
                    ports[port] = rc.name
    if rig.spec is None:
        return
    wiring = rig.spec.trigger
    leader = wiring.leader or rig.primary.name
    for rc in rig.cores:
        prop, value = (
            (wiring.leader_property, wiring.leader_value)
            if rc.name == leader
            else (wiring.follower_property, wiring.follower_value)
        )
        if prop is None or value is None:
            continue
        if not rc.core.hasProperty(rc.camera, prop):
            raise ConfigError(
                f"Camera {rc.camera!r} (core {rc.name!r}) has no property {prop!r} to "
                "set its trigger mode. Fix the rig file's trigger section (pairscope "
                "info RIG lists the camera's properties)."
            )
        allowed = rc.core.getAllowedPropertyValues(rc.camera, prop)
        if allowed and value not in allowed:
            raise ConfigError(
                f"Camera {rc.camera!r} (core {rc.name!r}) has no trigger mode "
                f"{prop}={value!r}; it allows {list(allowed)}. Fix the rig file's "
                "trigger section."
            )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "file"
    return f"{where}: {err['msg']}"
