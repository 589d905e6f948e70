"""The rig model of a run, built once as it starts: the rig file's declarations
(photometry per camera, optics), the photometry ``pairscope calibrate-camera``
stored beside the rig file, and what the devices report (``run.json``)."""

from __future__ import annotations

import logging
from typing import Any

from pymmcore_plus import CMMCorePlus

from ..hardware import Rig
from ..rig import (
    DeclaredPhotometry,
    RigModel,
    build_rig_model,
    photometry_disagreement,
    read_stored_photometry,
    stored_photometry_path,
)
from ._engine import light_power_property

logger = logging.getLogger(__name__)


def camera_model(core: CMMCorePlus, label: str) -> str | None:
    """A camera's adapter library and device name ("DemoCamera/DCam")."""
    try:
        lib = core.getDeviceLibrary(label)
        name = core.getDeviceName(label)
    except Exception:  # a device that cannot say must not stop the run
        return None
    if lib or name:
        return f"{lib}/{name}" if lib else name
    return None


def _camera_models(rig: Rig) -> dict[str, str]:
    """Each camera's adapter library and device name ("DemoCamera/DCam")."""
    models: dict[str, str] = {}
    for rc in rig.cores:
        if (model := camera_model(rc.core, rc.camera)) is not None:
            models[rc.camera] = model
    return models


def rig_model_at_start(rig: Rig, info: dict[str, Any]) -> RigModel:
    """The run's :class:`RigModel` from ``info`` (the rest of ``run.json``)."""
    spec = rig.spec
    declared: dict[str, DeclaredPhotometry | None] = {}
    if spec is not None:
        declared = {c.role: c.photometry for c in spec.cores if c.photometry}
    light = light_power_property(rig.cores[0].core)
    model = build_rig_model(
        info,
        declared_photometry=declared,
        declared_optics=spec.optics if spec is not None else None,
        light_power_property="-".join(light) if light else None,
        camera_models=_camera_models(rig),
    )
    return _with_stored_photometry(rig, model)


def _with_stored_photometry(rig: Rig, model: RigModel) -> RigModel:
    """``model`` with the photometry measured by ``pairscope calibrate-camera`` for
    each camera the rig file declares none for (the same label, model and binning);
    a declaration it contradicts by > 20 % is reported with both figures."""
    if rig.spec is None or rig.path is None:
        return model
    stored = read_stored_photometry(stored_photometry_path(rig.path))
    if stored is None:
        return model
    for role in ("lowdose", "reference"):
        cam = model.camera(role)
        entry = stored.find(role, cam.label, cam.camera_model, cam.binning)
        if entry is None:
            continue
        measured = entry.as_measured()
        if cam.photometry.source == "declared":
            if (
                line := photometry_disagreement(role, cam.photometry, measured)
            ) is not None:
                logger.warning("%s (measured by 'pairscope calibrate-camera')", line)
            continue
        model = model.with_photometry(role, measured)
        missing = tuple(
            m
            for m in model.missing
            if not (
                m.what.startswith(f"{role} camera ") and m.what.endswith(" photometry")
            )
        )
        model = model.model_copy(update={"missing": missing})
    return model
