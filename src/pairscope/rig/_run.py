"""A run's rig model as everything reads it: ``run.json``'s ``rig_model`` plus what
pairscope measured later and stored in ``calibration.json`` (the registration, the
photometry of cameras the rig file does not declare).

A declared photometry is kept; a measurement that contradicts it by more than
``DISAGREEMENT`` is reported with both figures (the declaration may be for another
gain mode, or the camera's settings changed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io import is_dark
from ..io import layout as L
from ._build import PHOTOMETRY_FIX, rig_model_from_info
from ._model import Photometry, RegistrationFacts, RigModel
from ._photometry import PhotometryError, photometry_from_frames

__all__ = [
    "DISAGREEMENT",
    "calibrate_run_photometry",
    "measure_run_photometry",
    "photometry_disagreement",
    "rig_model_for_run",
    "save_measured_photometry",
]

logger = logging.getLogger(__name__)

DISAGREEMENT = 0.20  # relative difference of e-/ADU that is reported


def rig_model_for_run(run: Any) -> RigModel:
    """The rig model of ``run`` (a :class:`pairscope.io.Run` or its folder)."""
    if isinstance(run, (str, Path)):
        from ..io import open_run

        run = open_run(run)
    model = rig_model_from_info(run.info)
    cal = run.calibration or {}
    reg = cal.get("registration")
    if isinstance(reg, Mapping):
        live = "live" in str(cal.get("source", ""))
        source: Literal["live estimate", "calibrated"] = (
            "live estimate" if live else "calibrated"
        )
        model = model.with_registration(
            RegistrationFacts(
                shift_y_px=float(reg.get("shift_y_px", 0.0)),
                shift_x_px=float(reg.get("shift_x_px", 0.0)),
                scale=float(reg.get("scale", 1.0)),
                source=source,
                pairs=int(reg.get("n_pairs", 0)),
            )
        )
    measured = cal.get("photometry")
    if isinstance(measured, Mapping):
        for role in ("lowdose", "reference"):
            if model.camera(role).photometry.source == "declared":
                continue  # the declaration stands; disagreements are reported
            entry = measured.get(role)
            if isinstance(entry, Mapping):
                try:
                    model = model.with_photometry(
                        role, Photometry.model_validate(entry)
                    )
                except ValueError:
                    logger.warning(
                        "%s: ignoring a damaged %s photometry", L.CALIBRATION, role
                    )
    return model


def photometry_disagreement(
    role: str, declared: Photometry, measured: Photometry
) -> str | None:
    """One line when a measurement contradicts a declaration by > 20 % (e-/ADU)."""
    if declared.e_per_adu is None or measured.e_per_adu is None:
        return None
    rel = abs(measured.e_per_adu - declared.e_per_adu) / declared.e_per_adu
    if rel <= DISAGREEMENT:
        return None
    return (
        f"the {role} camera's declared photometry ({declared.e_per_adu:.4g} e-/ADU, "
        f"{declared.method or 'rig file'}) differs by {rel:.0%} from what its frames "
        f"show ({measured.e_per_adu:.4g} e-/ADU): check the camera's gain mode and "
        "the rig file"
    )


def _frames(
    run: Any, role: str, max_frames: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``max_frames`` illuminated frames of one camera, and its dark
    frames (pairs logged with the light power at 0)."""
    light: list[np.ndarray] = []
    dark: list[np.ndarray] = []
    idx = [i for i, r in enumerate(run.records) if r.get(role)]
    for i in idx:
        off = is_dark(run.records[i])
        if not off and len(light) >= max_frames:
            continue
        frame = getattr(run[i], role)
        if frame is None:
            continue
        (dark if off else light).append(np.asarray(frame))
    return light, dark[:max_frames]


def measure_run_photometry(
    run: Any, *, max_frames: int = 8
) -> dict[str, Photometry | PhotometryError]:
    """Each camera's photometry from the run's own frames (photon transfer)."""
    out: dict[str, Photometry | PhotometryError] = {}
    for role in ("lowdose", "reference"):
        light, dark = _frames(run, role, max_frames)
        try:
            out[role] = photometry_from_frames(light, dark_frames=dark)
        except PhotometryError as exc:
            out[role] = exc
    return out


def save_measured_photometry(
    run_dir: str | Path, measured: Mapping[str, Photometry]
) -> None:
    """Store measured photometry in the run's ``calibration.json`` (kept beside the
    registration; read back by :func:`rig_model_for_run`)."""
    from ..io.calibration import save_photometry

    save_photometry(
        run_dir, {role: p.model_dump(mode="json") for role, p in measured.items()}
    )


def _same_instant_pairs(
    run: Any, max_pairs: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``max_pairs`` illuminated pairs of one instant, spread over the run."""
    idx = [i for i in run.same_instant_pairs() if not is_dark(run.records[i])]
    step = max(1, len(idx) // max_pairs)
    pairs = []
    for i in idx[::step][:max_pairs]:
        p = run[i]
        if p.lowdose is not None and p.reference is not None:
            pairs.append((np.asarray(p.lowdose), np.asarray(p.reference)))
    return pairs


def calibrate_run_photometry(
    run: Any, registration: object | None, *, max_pairs: int = 16
) -> list[str]:
    """Measure both cameras' photometry from the run's frames, store it in
    ``calibration.json`` and return one line per camera for the user: the
    reference camera from its own frames, the dim low-dose one against the
    registered reference (paired photon transfer).  A declaration in the rig file
    stands; a measurement that contradicts it by > 20 % is reported."""
    from ._photometry import photometry_from_pairs

    declared_model = rig_model_from_info(run.info)
    measured: dict[str, Photometry] = {}
    lines: list[str] = []
    light, dark = _frames(run, "reference", 8)
    try:
        measured["reference"] = photometry_from_frames(light, dark_frames=dark)
    except PhotometryError as exc:
        lines.append(
            f"reference camera photometry: not measured ({exc}); {PHOTOMETRY_FIX}"
        )
    ref = declared_model.reference.photometry
    reference = ref if ref.known else measured.get("reference")
    if reference is not None:
        _, dark_low = _frames(run, "lowdose", 8)
        try:
            measured["lowdose"] = photometry_from_pairs(
                _same_instant_pairs(run, max_pairs),
                int(declared_model.factor),
                reference,
                registration,
                dark_lowdose=dark_low,
            )
        except PhotometryError as exc:
            lines.append(
                f"lowdose camera photometry: not measured ({exc}); {PHOTOMETRY_FIX}"
            )
    else:
        lines.append(
            "lowdose camera photometry: not measured (it needs the reference camera's)"
        )
    for role, photometry in measured.items():
        declared = declared_model.camera(role).photometry
        problem = (
            photometry_disagreement(role, declared, photometry)
            if declared.source == "declared"
            else None
        )
        if problem is not None:
            lines.append(f"warning: {problem}")
        elif declared.source == "declared":
            lines.append(
                f"{role} camera photometry: declared {declared.describe()}; the frames "
                f"agree ({photometry.e_per_adu:.4g} e-/ADU)"
            )
        else:
            lines.append(f"{role} camera photometry: {photometry.describe()}")
    if measured:
        save_measured_photometry(run.path, measured)
    return lines
