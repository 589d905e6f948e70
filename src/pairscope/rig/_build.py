"""Build a run's :class:`RigModel` once: from the rig file's declarations and what
the devices report at the start of the run (``run.json``), and read it back.

A run recorded before the rig model existed (or imported) gets one built from its
``run.json`` the same way, with its photometry ``unknown``: a camera's ``Gain``
property is never read as e⁻/ADU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._model import (
    RIG_MODEL_VERSION,
    CameraFacts,
    Missing,
    Optics,
    Photometry,
    RegistrationFacts,
    RigModel,
)

__all__ = [
    "PHOTOMETRY_FIX",
    "DeclaredPhotometry",
    "build_rig_model",
    "rig_model_from_info",
]

logger = logging.getLogger(__name__)

PHOTOMETRY_FIX = (
    "declare it in the rig file under the camera's core (photometry: {e_per_adu, "
    "offset_adu, read_noise_e}, from its data sheet or EMVA 1288 report), or measure "
    "it with 'pairscope calibrate-camera RIG'"
)


class DeclaredPhotometry(BaseModel):
    """A camera's photometry as a rig file declares it (see :class:`Photometry`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    e_per_adu: float = Field(gt=0, allow_inf_nan=False)
    offset_adu: float = Field(allow_inf_nan=False)
    read_noise_e: float | None = Field(None, ge=0, allow_inf_nan=False)
    #: where the numbers come from ("data sheet", "EMVA 1288 report 2025-03")
    reference: str = ""

    def photometry(self, rig_name: str) -> Photometry:
        what = self.reference or f"rig file {rig_name}"
        return Photometry(
            e_per_adu=self.e_per_adu,
            offset_adu=self.offset_adu,
            read_noise_e=self.read_noise_e,
            source="declared",
            method=what,
        )


class DeclaredOptics(BaseModel):
    """The light path as a rig file declares it (every field optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    numerical_aperture: float | None = Field(None, gt=0, le=1.7, allow_inf_nan=False)
    wavelength_nm: float | None = Field(None, gt=100, lt=2000, allow_inf_nan=False)
    split_ratio: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)


#: device properties that report the optics (the demo hub's names and common
#: ones), and the range a figure must be in to be taken (a wavelength in µm, an
#: NA of 0: not the optics' figure)
_NA_PROPS = ("NumericalAperture", "NA", "LensNA"), (0.0, 1.7)
_WAVELENGTH_PROPS = (
    ("EmissionWavelength_nm", "EmissionWavelength", "Wavelength_nm", "Wavelength"),
    (100.0, 2000.0),
)
_SPLIT_PROPS = ("SplitFraction",), (0.0, 1.0)


def _number(
    props: Mapping[str, Any], wanted: tuple[tuple[str, ...], tuple[float, float]]
) -> float | None:
    names, (low, high) = wanted
    for name in names:
        try:
            value = float(props[name])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value) and low < value <= high:
            return value
    return None


def _device_props(state: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every ``{property: value}`` mapping of a system state (per device, or
    nested per core)."""
    for value in state.values():
        if isinstance(value, Mapping):
            if any(not isinstance(v, Mapping) for v in value.values()):
                yield value
            yield from _device_props(value)


def _device_number(
    state: Mapping[str, Any], wanted: tuple[tuple[str, ...], tuple[float, float]]
) -> float | None:
    """The first device property of ``wanted``'s names in its range."""
    for props in _device_props(state):
        if (v := _number(props, wanted)) is not None:
            return v
    return None


def _binning(props: Mapping[str, Any]) -> int:
    try:
        return max(1, int(str(props.get("Binning", "1")).split("x")[0]))
    except ValueError:
        return 1


def _camera_model(props: Mapping[str, Any]) -> str | None:
    for key in ("CameraName", "Description", "CameraID"):
        value = props.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def build_rig_model(
    info: Mapping[str, Any],
    *,
    declared_photometry: Mapping[str, DeclaredPhotometry | None] | None = None,
    declared_optics: DeclaredOptics | None = None,
    light_power_property: str | None = None,
    camera_models: Mapping[str, str] | None = None,
) -> RigModel:
    """The rig model of a run starting with ``info`` (``run.json``: detectors,
    rig, system_state), the rig file's declarations per role and optics."""
    det = info.get("detectors") or {}
    state = info.get("system_state") or {}
    rig = info.get("rig") or {}
    source = rig.get("rig_file") or info.get("config_path")
    rig_name = Path(str(source)).name if source else str(rig.get("name") or "rig")
    declared_photometry = declared_photometry or {}
    camera_models = camera_models or {}
    missing: list[Missing] = []
    cameras: dict[str, CameraFacts] = {}
    mode = str(det.get("mode", "triggered"))
    roles: tuple[Literal["lowdose"], Literal["reference"]] = ("lowdose", "reference")
    for role in roles:
        label = str(det.get(role) or "")
        props = state.get(label, {}) if label else {}
        pixel = det.get(f"{role}_pixel_size_um")
        declared = declared_photometry.get(role)
        if declared is None and mode == "alternating":
            declared = declared_photometry.get("lowdose")  # one camera, two roles
        photometry = declared.photometry(rig_name) if declared else Photometry()
        if not photometry.known:
            missing.append(
                Missing(what=f"{role} camera {label!r} photometry", fix=PHOTOMETRY_FIX)
            )
        if not pixel:
            missing.append(
                Missing(
                    what=f"{role} camera {label!r} pixel size",
                    fix="define a pixel-size configuration in its core's config",
                )
            )
        binning = (
            1 if (role == "reference" and mode == "alternating") else _binning(props)
        )
        cameras[role] = CameraFacts(
            role=role,
            label=label,
            core=str(det.get(f"{role}_core") or "primary"),
            camera_model=camera_models.get(label) or _camera_model(props),
            binning=binning,
            pixel_size_um=float(pixel) if pixel else None,
            photometry=photometry,
        )
    d = declared_optics or DeclaredOptics()
    optics = Optics(
        numerical_aperture=d.numerical_aperture or _device_number(state, _NA_PROPS),
        wavelength_nm=d.wavelength_nm or _device_number(state, _WAVELENGTH_PROPS),
        split_ratio=d.split_ratio
        or _number(state.get(cameras["lowdose"].label, {}), _SPLIT_PROPS),
        light_power_property=light_power_property,
    )
    if optics.rayleigh_um is None:
        missing.append(
            Missing(
                what="objective NA and emission wavelength (the Rayleigh distance)",
                fix="add optics: {numerical_aperture, wavelength_nm} to the rig file",
            )
        )
    if optics.split_ratio is None and mode != "alternating":
        missing.append(
            Missing(
                what="the beam splitter's ratio",
                fix="add optics: {split_ratio: 0.1} (the low-dose camera's share) "
                "to the rig file",
            )
        )
    if light_power_property is None:
        missing.append(
            Missing(
                what="a light-power property (dark frames are not recognised)",
                fix="make the light source the core's shutter; its Power or "
                "Intensity property is then recorded with every pair",
            )
        )
    return RigModel(
        version=RIG_MODEL_VERSION,
        rig=rig_name,
        mode=mode,
        factor=int(det.get("factor") or 1),
        lowdose=cameras["lowdose"],
        reference=cameras["reference"],
        optics=optics,
        registration=RegistrationFacts(),
        missing=tuple(missing),
    )


def rig_model_from_info(info: Mapping[str, Any]) -> RigModel:
    """The rig model recorded in ``run.json`` (``rig_model``), or, for a run from
    before it existed, one built from the rest of ``run.json`` (photometry unknown)."""
    stored = info.get("rig_model")
    if isinstance(stored, Mapping):
        version = stored.get("version")
        if version != RIG_MODEL_VERSION:
            raise ValueError(
                f"run.json's rig_model is version {version}; this pairscope reads "
                f"version {RIG_MODEL_VERSION}: update pairscope"
            )
        try:
            return RigModel.model_validate(stored)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ValueError(
                f"run.json's rig_model is damaged: {where}: {first['msg']}"
            ) from None
    return build_rig_model(info)
