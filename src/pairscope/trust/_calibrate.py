"""Where the trust checks get their noise figures, registration and scale.

Each camera's offset, e⁻/ADU and read noise come from the run's rig model
(:mod:`pairscope.rig`: declared in the rig file, or measured and stored by
``pairscope calibrate``), never from a camera's ``Gain`` property.  Where the rig
model does not know a camera's photometry it is measured from the frames at hand:
the reference camera by photon transfer of its own frames, the low-dose camera
against the registered, binned reference (:func:`pairscope.rig.photometry_from_pairs`),
else of its own frames.  Only where that fails is a rough estimate used (the dark
floor as offset, 1 e⁻/ADU: the figures are relative).  Either is said once, in one
warning that names the camera, what is used and the fix.  The Rayleigh distance
comes from the rig model's optics (else 2 reference pixels, and ``source`` says so).

Offline (a logged run) the registration is the one stored with the run (or
estimated from its pairs); live, the one estimated from the first pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from ..io import Run
from ..io.calibration import (
    Registration,
    load_registration,
    registration_from_pairs,
)
from ..rig import PHOTOMETRY_FIX, Photometry, PhotometryError, RigModel
from ._checks import CameraNoise, TrustCalibration
from ._monitor_util import central as _central

__all__ = [
    "ROUGH",
    "calibration_for_run",
    "calibration_from_info",
    "noise_for_rig",
    "rough_noise",
]

logger = logging.getLogger(__name__)

ROUGH = "rough estimate"  # photometry_source of a camera nothing could measure
#: a conversion gain outside this range is no camera's (an EMCCD at full EM gain
#: is about 0.01 e⁻/ADU, a deep-well CCD a few tens): the frames held no shot noise
PLAUSIBLE_E_PER_ADU = (1e-3, 1e3)
MEASURE_FRAMES = 8  # frames (or pairs) a camera's photometry is measured from
_ROLE_NAMES = {"lowdose": "low-dose", "reference": "reference"}
#: what a measurement that cannot be made raises (PhotometryError is a ValueError;
#: a degenerate fit a LinAlgError, also one)
_FAILED = (ValueError, ArithmeticError)


def rough_noise(frames: Sequence[np.ndarray]) -> CameraNoise:
    """A rough noise model from frames alone: offset at the dark floor, 1 e⁻/ADU and
    the read noise from the dark pixels' scatter (only when nothing better exists;
    the figures are relative)."""
    x = np.asarray(frames[0], np.float64)
    smooth = gaussian_filter(x, 2.0)
    dark = smooth <= np.percentile(smooth, 10)
    offset = float(np.median(x[dark]))
    read = float(np.std((x - smooth)[dark]))
    return CameraNoise(
        1.0,
        offset,
        read,
        photometry_source=ROUGH,
        photometry_method="dark floor as offset, 1 e-/ADU: figures are relative",
    )


def _noise(p: Photometry) -> CameraNoise:
    assert p.e_per_adu is not None and p.offset_adu is not None  # p.known
    return CameraNoise(
        p.e_per_adu,
        p.offset_adu,
        p.read_noise_e or 0.0,
        photometry_source=p.source,
        photometry_method=p.method,
    )


def _check_plausible(p: Photometry) -> Photometry:
    lo, hi = PLAUSIBLE_E_PER_ADU
    assert p.e_per_adu is not None
    if not lo <= p.e_per_adu <= hi:
        raise PhotometryError(
            f"the fit gives {p.e_per_adu:.3g} e-/ADU, no camera's: the frames hold "
            "no measurable shot noise"
        )
    return p


def _measure_reference(frames: Sequence[np.ndarray]) -> Photometry:
    from ..rig import photometry_from_frames

    return _check_plausible(photometry_from_frames(frames))


def _measure_lowdose(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    factor: int,
    reference: Photometry | None,
    registration: Registration | None,
) -> tuple[Photometry, str]:
    """Against the reference where its photometry is known, else of its own frames."""
    from ..rig import photometry_from_frames, photometry_from_pairs

    why = ""
    if reference is not None and reference.known:
        try:
            p = photometry_from_pairs(pairs, factor, reference, registration)
            return _check_plausible(p), f"against the reference in {len(pairs)} pairs"
        except _FAILED as exc:  # ValueError: a damaged pair
            why = f" (against the reference: {exc})"
    p = _check_plausible(photometry_from_frames([lo for lo, _ in pairs]))
    return p, f"from {len(pairs)} of its frames{why}"


def noise_for_rig(
    rig: RigModel,
    factor: int,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    registration: Registration | None,
    *,
    measure: bool = True,
) -> tuple[CameraNoise, CameraNoise, str]:
    """Both cameras' noise figures (module doc) and the one warning to give ("" when
    the rig model knows both).  ``factor``: the binning ratio; ``pairs``:
    same-instant ``(low, ref)`` frames to measure from; ``measure=False`` goes
    straight to the rough estimate (and says nothing)."""
    pairs = list(pairs)[:MEASURE_FRAMES]
    if not pairs and not rig.photometry_known:
        raise ValueError("the rig model has no photometry and there are no frames")
    said: dict[str, str] = {}
    ref_p: Photometry | None = None  # the reference's, where known or measured
    if rig.reference.photometry.known:
        ref_p = rig.reference.photometry
        ref = _noise(ref_p)
    else:
        try:
            if not measure:
                raise PhotometryError("not measured")
            ref_p = _measure_reference([r for _, r in pairs])
            ref = _noise(ref_p)
            said["reference"] = f"measured from {len(pairs)} of its frames"
        except _FAILED as exc:
            ref = rough_noise([pairs[0][1]])
            said["reference"] = f"{ROUGH} ({ref.photometry_method}; measuring: {exc})"
    low_p = rig.lowdose.photometry
    if low_p.known:
        low = _noise(low_p)
    else:
        try:
            if not measure:
                raise PhotometryError("not measured")
            p, how = _measure_lowdose(pairs, factor, ref_p, registration)
            low = _noise(p)
            said["lowdose"] = f"measured {how}"
        except _FAILED as exc:
            low = rough_noise([pairs[0][0]])
            said["lowdose"] = f"{ROUGH} ({low.photometry_method}; measuring: {exc})"
    if not measure:
        return low, ref, ""
    return low, ref, _warning(rig, said)


def _warning(rig: RigModel, said: dict[str, str]) -> str:
    """One line: each camera without photometry, what is used instead, the fix."""
    if not said:
        return ""
    parts = [
        f"the {_ROLE_NAMES[role]} camera {rig.camera(role).label!r}: {what}"
        for role, what in said.items()
    ]
    fix = next(
        (m.fix for m in rig.missing if m.what.endswith("photometry")), PHOTOMETRY_FIX
    )
    return (
        "trust: the rig model has no photometry for "
        + "; for ".join(parts)
        + f". Fix: {fix}"
    )


def rayleigh_of(rig: RigModel) -> tuple[float, str]:
    """The Rayleigh distance in reference pixels and where it came from."""
    r = rig.rayleigh_reference_px
    if r is not None:
        o = rig.optics
        return r, (
            f"Rayleigh distance from the optics (NA {o.numerical_aperture:g}, "
            f"{o.wavelength_nm:g} nm)"
        )
    return 2.0, (
        "Rayleigh distance assumed 2 reference pixels (the rig model has no NA, "
        "wavelength or reference pixel size)"
    )


def _source(low: CameraNoise, ref: CameraNoise, rayleigh: str) -> str:
    return (
        f"rig model: low-dose photometry {low.photometry_source}, reference "
        f"photometry {ref.photometry_source}; {rayleigh}"
    )


def _calibration(
    rig: RigModel,
    factor: int,
    registration: Registration,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    measure: bool = True,
    where: str = "",
) -> TrustCalibration:
    low, ref, warning = noise_for_rig(rig, factor, pairs, registration, measure=measure)
    if warning:
        logger.warning("%s%s", where, warning)
    rayleigh_px, rayleigh = rayleigh_of(rig)
    return TrustCalibration(
        factor=factor,
        lowdose=low,
        reference=ref,
        registration=registration,
        rayleigh_px=rayleigh_px,
        source=_source(low, ref, rayleigh),
    )


def calibration_from_info(
    info: dict[str, Any],
    factor: int,
    registration: Registration,
    *,
    frames: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> TrustCalibration:
    """Live calibration: the rig model of ``info`` (``run.json``), what it lacks
    measured from ``frames`` (same-instant low-dose and reference frames)."""
    from ..rig import rig_model_from_info

    return _calibration(rig_model_from_info(info), factor, registration, frames)


def _registration(run: Run, usable: list[int]) -> Registration:
    """The stored registration, else one estimated from the central 128² of up to 8
    pairs of the same instant (shift and scale; the whole-frame fit of
    ``pairscope calibrate`` takes minutes on large frames and is not needed here)."""
    reg = load_registration(run)
    if reg is not None:
        return reg
    if len(usable) < len(run.with_reference()):
        logger.warning(
            "%s: %d pairs are not of one instant; registering on the other %d",
            run.path,
            len(run.with_reference()) - len(usable),
            len(usable),
        )
    step = max(1, len(usable) // 8)
    f = run.factor
    pairs = []
    for i in usable[::step][:8]:
        p = run[i]
        assert p.lowdose is not None and p.reference is not None  # usable pairs
        pairs.append(_central(p.lowdose, p.reference, f, 128))
    return registration_from_pairs(pairs, f, fit_scale=True)


def _frames(run: Run, usable: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to :data:`MEASURE_FRAMES` same-instant pairs, spread over the run."""
    step = max(1, len(usable) // MEASURE_FRAMES)
    out = []
    for i in usable[::step][:MEASURE_FRAMES]:
        p = run[i]
        assert p.lowdose is not None and p.reference is not None  # usable pairs
        out.append((np.asarray(p.lowdose), np.asarray(p.reference)))
    return out


def calibration_for_run(run: Run, *, fit_noise: bool = True) -> TrustCalibration:
    """Offline calibration of ``run`` (module doc).  ``fit_noise=False`` (a caller
    that needs the registration and PSNR only) measures nothing and says nothing:
    a camera the rig model does not know gets the rough estimate."""
    from ..rig import rig_model_for_run

    usable = run.same_instant_pairs()
    if not usable:
        raise ValueError(
            f"{run.path}: no pair has a reference of the same instant (sequential "
            "or alternating pairs), so the trust checks cannot be calibrated on it; "
            "acquire with a triggered or simultaneous mode"
        )
    reg = _registration(run, usable)
    rig = rig_model_for_run(run)
    pairs = [] if rig.photometry_known else _frames(run, usable)
    return _calibration(
        rig, run.factor, reg, pairs, measure=fit_noise, where=f"{run.path}: "
    )
