"""Ground truth of demo runs: target positions and independent second references.

A demo run records the hub's seed and optics and every camera's properties in
``run.json`` (``system_state``), and each pair's trigger and stage position in the
manifest, so the specimen can be rebuilt exactly for validation.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from .._binning import bin_sum
from ._optics import Optics
from ._scene import Scene, SensorGeometry
from ._sensor import Sensor
from ._specimen import Specimen

HUB = "DemoHub"


def is_demo_run(info: dict[str, Any]) -> bool:
    return HUB in info.get("system_state", {})


def _state(info: dict[str, Any], device: str) -> dict[str, str]:
    try:
        return info["system_state"][device]
    except KeyError:
        raise ValueError(
            f"This run has no {device!r} in run.json's system_state: it was not "
            "acquired on the demo microscope. Give the two-point targets explicitly."
        ) from None


def scene_for_run(info: dict[str, Any]) -> Scene:
    hub = _state(info, HUB)
    optics = Optics(
        float(hub["EmissionWavelength_nm"]) / 1000, float(hub["NumericalAperture"])
    )
    specimen = Specimen(
        int(hub["Seed"]),
        rayleigh_um=optics.rayleigh_um,
        scenario=hub.get("Scenario", "none"),
        scenario_onset_s=float(hub.get("ScenarioOnset_s", 0.0)),
        matched_rods=hub.get("MatchedRods") == "yes",
        kind=hub.get("Specimen", "cells"),
    )
    return Scene(specimen, optics)


def scenario_active(info: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether the demo scenario's structures were present at ``record``'s trigger
    (``False`` for runs without a scenario or not from the demo)."""
    hub = info.get("system_state", {}).get(HUB, {})
    if hub.get("Scenario", "none") in ("none", ""):
        return False
    t = int(record["trigger_index"]) * float(hub["SpecimenSecondsPerTrigger"])
    return t >= float(hub.get("ScenarioOnset_s", 0.0))


def geometry(info: dict[str, Any], camera: str) -> SensorGeometry:
    cam = _state(info, camera)
    size = int(float(cam["SensorSize"]))
    return SensorGeometry(
        (size, size),
        float(cam["PixelSize_um"]),
        (float(cam["OffsetX_um"]), float(cam["OffsetY_um"])),
        1.0 / float(cam["Magnification"]),
    )


def targets_in_pixels(
    info: dict[str, Any], record: dict[str, Any], camera: str, *, rods: bool = False
) -> list[tuple[tuple[float, float], tuple[float, float], float]]:
    """Two-point targets as ``((x1, y1), (x2, y2), separation_um)`` in the unbinned
    pixel grid of ``camera`` for the stage position of ``record``; only those inside.
    With ``rods`` the pairs' control rods instead, each from one end to the other."""
    scene = scene_for_run(info)
    objects = scene.specimen.rods if rods else scene.specimen.targets
    g = geometry(info, camera)
    sx, sy = record["stage_xyz_um"][0] or 0.0, record["stage_xyz_um"][1] or 0.0
    h, w = g.shape

    def to_px(p: tuple[float, float]) -> tuple[float, float]:
        return g.to_pixels((p[0] - sx, p[1] - sy))

    out = []
    for t in objects:
        a, b = to_px(t.p1_um), to_px(t.p2_um)
        if all(
            4 <= c <= lim - 5 for c, lim in ((a[0], w), (a[1], h), (b[0], w), (b[1], h))
        ):
            out.append((a, b, t.separation_um))
    return out


def _frame_photons(
    info: dict[str, Any], record: dict[str, Any], camera: str, role: str
) -> tuple[np.ndarray, Sensor, int, int]:
    """Expected photons of ``record``'s ``role`` frame (``"reference"`` or
    ``"lowdose"``) on ``camera``'s unbinned sensor, its sensor, binning and
    trigger (the instant the camera read)."""
    scene = scene_for_run(info)
    hub, cam = _state(info, HUB), _state(info, camera)
    frame = record[role]
    trigger = int(frame.get("camera_trigger_index", record["trigger_index"]))
    t = trigger * float(hub["SpecimenSecondsPerTrigger"])
    x, y, z = (v or 0.0 for v in record["stage_xyz_um"])
    (photons,) = scene.render(t, (x, y), z, [geometry(info, camera)])
    power = (record.get("light_power") or 100.0) / 100.0
    dose = float(frame["exposure_ms"]) * power * float(cam["SplitFraction"])
    sensor = Sensor(
        quantum_efficiency=float(cam["QuantumEfficiency"]),
        read_noise_e=float(cam["ReadNoise_e"]),
        gain_e_per_adu=float(cam["Gain"]),
        offset_adu=float(cam["Offset"]),
    )
    return photons * np.float32(dose), sensor, int(frame["binning"]), trigger


def independent_reference(
    info: dict[str, Any], record: dict[str, Any], camera: str = "ReferenceCam"
) -> np.ndarray:
    """A second reference frame of the same instant with independent noise."""
    photons, sensor, binning, trigger = _frame_photons(
        info, record, camera, "reference"
    )
    seed = int(_state(info, HUB)["Seed"])
    rng = np.random.default_rng((seed, trigger, zlib.crc32(b"second reference")))
    return sensor.expose(photons, binning, rng)


def noise_free_reference(
    info: dict[str, Any], record: dict[str, Any], camera: str = "ReferenceCam"
) -> np.ndarray:
    """The reference frame's expectation (ADU, float32): what an ideal restoration
    could at best predict, since the noise of the measured reference is unknowable."""
    return _expectation(*_frame_photons(info, record, camera, "reference")[:3])


def noise_free_lowdose(
    info: dict[str, Any], record: dict[str, Any], camera: str = "LowDoseCam"
) -> np.ndarray:
    """The low-dose frame's expectation (ADU, float32, binned): what the low-dose
    camera would read without noise."""
    return _expectation(*_frame_photons(info, record, camera, "lowdose")[:3])


def _expectation(photons: np.ndarray, sensor: Sensor, binning: int) -> np.ndarray:
    electrons = bin_sum(photons, binning) * sensor.quantum_efficiency
    return (electrons / sensor.gain_e_per_adu + sensor.offset_adu).astype(np.float32)
