"""Does a model fit the rig it is about to restore?  One check for ``restore``,
``evaluate``, the live preview and fine-tuning.

:func:`check_model_for_rig` compares the rig model a model file records (the rig of
its training runs) with the rig model of the run or acquisition at hand.  A
different binning factor, or a low-dose pixel size more than 5 % off, is refused
(:class:`RigMismatchError`, one line with both figures and the fix): the network
would restore at the wrong scale.  A conversion gain (e-/ADU) more than 20 % off
(both known) or another camera model is a warning line with both figures: the
model still runs, but its normalisation and noise model were learned on other
numbers.  A model that records no rig model gets one warning saying its rig is
unknown.  A model trained on pairscope's simulated demo camera (the bundled demo
models) says so on any other camera.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from ..rig import RigModel
from ._model_file import ModelFileError, ModelInfo

__all__ = [
    "BUNDLED_MODEL_NAMES",
    "PHOTOMETRY_RTOL",
    "PIXEL_SIZE_RTOL",
    "SIM_DEMO_CAMERA",
    "RigMismatchError",
    "check_model_for_rig",
    "log_rig_check",
]

logger = logging.getLogger(__name__)

#: the camera model of pairscope's simulated demo camera (``camera_model``)
SIM_DEMO_CAMERA = "pairscope.sim.devices/DemoCamera"
#: the names of the demo models shipped in ``pairscope/models``
BUNDLED_MODEL_NAMES = ("demo_x2", "demo_x4")
PIXEL_SIZE_RTOL = 0.05  # a low-dose pixel size further off is refused
PHOTOMETRY_RTOL = 0.20  # a conversion gain further off is a warning

_TRAIN = "train one for this rig: pairscope train RUN"
_ADAPT = "fine-tune it (--fine-tune) or train one for this rig: pairscope train RUN"


class RigMismatchError(ModelFileError):
    """A model that does not fit the rig: another binning factor or pixel size."""


def _name(info: ModelInfo) -> str:
    return f"model {info.name!r}"


def _demo_sentence(info: ModelInfo, camera: str) -> str:
    what = "the bundled model" if info.name in BUNDLED_MODEL_NAMES else f"{_name(info)}"
    return (
        f"{what} was trained on pairscope's simulated demo specimen and camera; on "
        f"{camera} its output is a guess until fine-tuned (--fine-tune) or retrained "
        "on this rig's pairs (pairscope train RUN)"
    )


def _refusals(info: ModelInfo, rig: RigModel, path: Path | None) -> None:
    if info.factor != rig.factor:
        raise RigMismatchError(
            path,
            f"{_name(info)} restores ×{info.factor} but this rig's binning factor is "
            f"×{rig.factor} ({rig.lowdose.label or 'low-dose camera'}): {_TRAIN}, or pass --model "
            f"with a ×{rig.factor} model",
        )
    have = info.lowdose_pixel_size_um
    if have is None and info.rig_model is not None:
        have = info.rig_model.lowdose.pixel_size_um
    want = rig.lowdose.pixel_size_um
    if (
        have is not None
        and want is not None
        and not math.isclose(have, want, rel_tol=PIXEL_SIZE_RTOL)
    ):
        raise RigMismatchError(
            path,
            f"{_name(info)} was trained on {have:g} µm low-dose pixels but this rig's "
            f"{rig.lowdose.label or 'low-dose camera'} has {want:g} µm (more than "
            f"{PIXEL_SIZE_RTOL:.0%} apart): {_TRAIN}, or pass --model with one "
            "trained at this pixel size",
        )


def _warnings(info: ModelInfo, rig: RigModel) -> list[str]:
    trained = info.rig_model
    if trained is None:
        return [
            f"{_name(info)} records no rig model (made before pairscope recorded "
            "one, or saved without it): the rig it was trained on is unknown, so its "
            f"cameras and photometry are not checked against this rig; to be sure, "
            f"{_TRAIN}"
        ]
    lines: list[str] = []
    here = rig.lowdose.camera_model  # None: not recorded (a run from before it)
    demo = trained.lowdose.camera_model == SIM_DEMO_CAMERA
    if demo and here is not None and here != SIM_DEMO_CAMERA:
        lines.append(_demo_sentence(info, here))
    for role, name in (("lowdose", "low-dose"), ("reference", "reference")):
        was, now = trained.camera(role), rig.camera(role)
        if (
            not (demo and lines)  # the demo sentence says it for both cameras
            and was.camera_model is not None
            and now.camera_model is not None
            and was.camera_model != now.camera_model
        ):
            lines.append(
                f"{_name(info)} was trained with a {name} camera {was.camera_model} "
                f"({was.label}) but this rig's is {now.camera_model} ({now.label}): "
                f"its output may not fit this camera; {_ADAPT}"
            )
        p, q = was.photometry, now.photometry
        if p.known and q.known:
            assert p.e_per_adu is not None and q.e_per_adu is not None
            rel = abs(q.e_per_adu - p.e_per_adu) / p.e_per_adu
            if rel > PHOTOMETRY_RTOL:
                lines.append(
                    f"{_name(info)} was trained at {p.e_per_adu:.4g} e-/ADU on the "
                    f"{name} camera ({p.source}) but this rig's {now.label} has "
                    f"{q.e_per_adu:.4g} e-/ADU ({q.source}), {rel:.0%} apart: its "
                    f"normalisation and noise model assume other ADU; {_ADAPT}"
                )
    return lines


def check_model_for_rig(
    info: ModelInfo, rig: RigModel, *, path: str | Path | None = None
) -> list[str]:
    """Check a model (its :class:`ModelInfo`) against the rig it is used on.

    Raises :class:`RigMismatchError` (a ``ValueError``; one line naming both
    figures and the fix) when the binning factor differs or the low-dose pixel size
    differs by more than :data:`PIXEL_SIZE_RTOL`.  Returns warning lines, each with
    both figures: conversion gain (e-/ADU) more than :data:`PHOTOMETRY_RTOL` apart
    (both known), another camera model, a model trained on the simulated demo
    camera used on another camera, or a model that records no rig model.
    ``path`` names the model file in a refusal.
    """
    where = None if path is None else Path(path)
    _refusals(info, rig, where)
    return _warnings(info, rig)


def log_rig_check(
    info: ModelInfo,
    rig: RigModel,
    *,
    path: str | Path | None = None,
    log: Callable[[str], object] | None = None,
) -> list[str]:
    """:func:`check_model_for_rig`, each warning line logged once (``log``, else
    this module's logger at WARNING); returns the lines."""
    lines = list(dict.fromkeys(check_model_for_rig(info, rig, path=path)))
    say = log or logger.warning
    for line in lines:
        say(line)
    return lines
