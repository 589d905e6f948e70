"""The rig model of a run, built once as it starts: the rig file's declarations
(photometry per camera, optics) and what the devices report (``run.json``)."""

from __future__ import annotations

import logging
from typing import Any

from ..hardware import Rig
from ..rig import DeclaredPhotometry, RigModel, build_rig_model
from ._engine import light_power_property

logger = logging.getLogger(__name__)


def _camera_models(rig: Rig) -> dict[str, str]:
    """Each camera's adapter library and device name ("DemoCamera/DCam")."""
    models: dict[str, str] = {}
    for rc in rig.cores:
        try:
            lib = rc.core.getDeviceLibrary(rc.camera)
            name = rc.core.getDeviceName(rc.camera)
        except Exception:  # a device that cannot say must not stop the run
            continue
        if lib or name:
            models[rc.camera] = f"{lib}/{name}" if lib else name
    return models


def rig_model_at_start(rig: Rig, info: dict[str, Any]) -> RigModel:
    """The run's :class:`RigModel` from ``info`` (the rest of ``run.json``)."""
    spec = rig.spec
    declared: dict[str, DeclaredPhotometry | None] = {}
    if spec is not None:
        declared = {c.role: c.photometry for c in spec.cores if c.photometry}
    light = light_power_property(rig.cores[0].core)
    return build_rig_model(
        info,
        declared_photometry=declared,
        declared_optics=spec.optics if spec is not None else None,
        light_power_property="-".join(light) if light else None,
        camera_models=_camera_models(rig),
    )
