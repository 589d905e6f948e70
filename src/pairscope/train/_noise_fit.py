"""Photon-transfer fit of the low-dose camera from logged pairs (and dark frames).

Model (``g`` in e⁻/ADU, ``σ`` the read noise in e⁻): a low-dose pixel with mean ``μ``
ADU has variance ``(μ - offset)/g + (σ/g)²``.  The specimen moves, so ``μ`` comes
from the simultaneous reference: ``μ ≈ offset + a·B``, ``B`` the reference minus its
offset, registered (``calibration.json``) and sum-binned to the low-dose grid.

The reference is not noise-free: the residual ``L - μ`` has variance
``Var(L) + a²·Var(B)``, and ``Var(B) = κ·((B/f²)/g_ref + σ_ref²)`` (ADU, ``κ`` the
noise gain of warp + bin, measured on white noise).  That term is subtracted per bin;
it needs the *reference* camera's photometry: from the run's rig model (declared in
the rig file or measured), else measured from the reference frames themselves
(:func:`pairscope.rig.photometry_from_frames`); never a camera's ``Gain`` property.
The fit itself is :func:`pairscope.rig.paired_photon_transfer`.

Offset and read noise: from dark frames (pairs logged with ``light_power == 0``, or
``dark_runs``), the mean and the per-pixel temporal variance (fixed pattern removed);
without dark frames, ``a`` and the offset come from an errors-in-variables corrected
regression of ``L`` on ``B`` and the read noise from the intercept of the
variance-mean line (less precise: a few % at the demo's dose).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairscope.io import Run, is_dark, open_run
from pairscope.io.calibration import Registration, registration_or_estimate
from pairscope.rig import (
    PHOTOMETRY_FIX,
    Photometry,
    PhotometryError,
    paired_photon_transfer,
    photometry_from_frames,
    rig_model_for_run,
)

__all__ = ["NoiseModel", "fit_noise_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NoiseModel:
    """Poisson-Gaussian model of the low-dose camera (and the pair's dose ratio).

    ``dose_ratio``: low-dose electrons per unbinned pixel / reference electrons per
    pixel, for the same specimen (``nan`` if unknown).  ``reference_*``: the
    reference camera's gain and offset used to turn reference ADU into electrons.
    """

    gain_e_per_adu: float
    offset_adu: float
    read_noise_e: float
    n_points: int = 0
    dose_ratio: float = math.nan
    reference_gain_e_per_adu: float = math.nan
    reference_offset_adu: float = math.nan


def fit_noise_model(
    runs: Sequence[str | Path | Run],
    *,
    dark_runs: Sequence[str | Path | Run] = (),
    max_pairs: int = 64,
    n_bins: int = 40,
    reference_gain_e_per_adu: float | None = None,
    registrations: Sequence[Registration | None] | None = None,
) -> NoiseModel:
    """Fit :class:`NoiseModel` for the low-dose camera of ``runs`` (module doc).

    ``registrations``: one per run where the caller has them already; a run's
    ``None`` (or no list) is looked up or estimated here."""
    opened = [r if isinstance(r, Run) else open_run(r) for r in runs]
    darks = [r if isinstance(r, Run) else open_run(r) for r in dark_runs]
    f = opened[0].factor
    light: list[tuple[np.ndarray, np.ndarray]] = []
    regs: list[Registration] = []
    dark_low: list[np.ndarray] = []
    dark_ref: list[np.ndarray] = []
    known = list(registrations or [None] * len(opened)) + [Registration()] * len(darks)
    for run, given in zip(opened + darks, known, strict=True):
        is_dark_run = run in darks
        reg = given or registration_or_estimate(run)
        for i in range(len(run)):
            rec = run.records[i]
            dark = is_dark_run or is_dark(rec)
            if not dark and (
                not rec.get("reference") or rec.get("simultaneous") is False
            ):
                continue  # the fit needs the reference of the same instant
            p = run[i]
            if p.lowdose is None:  # a reference kept alone: no low-dose frame to fit
                continue
            if dark:
                dark_low.append(p.lowdose.astype(np.float64))
                if p.reference is not None:
                    dark_ref.append(p.reference.astype(np.float64))
            else:
                assert p.reference is not None
                light.append((p.lowdose.astype(np.float64), p.reference))
                regs.append(reg)
    if not light:
        raise ValueError(
            "no illuminated pairs with a simultaneous reference to fit (sequential "
            "pairs see the specimen at two instants): acquire in a simultaneous or "
            "triggered mode"
        )
    step = max(1, math.ceil(len(light) / max_pairs))
    light, regs = light[::step], regs[::step]
    reference = _reference_photometry(
        opened[0], [r for _, r in light], dark_ref, reference_gain_e_per_adu
    )
    try:
        low, a = paired_photon_transfer(
            light, f, reference, regs, dark_lowdose=dark_low, n_bins=n_bins
        )
    except PhotometryError as exc:
        raise ValueError(
            f"the low-dose camera's noise cannot be fitted: {exc}"
        ) from None
    assert low.e_per_adu is not None and low.offset_adu is not None
    assert reference.e_per_adu is not None and reference.offset_adu is not None
    return NoiseModel(
        gain_e_per_adu=low.e_per_adu,
        offset_adu=low.offset_adu,
        read_noise_e=low.read_noise_e or 0.0,
        n_points=sum(int(lo.size) for lo, _ in light),
        dose_ratio=float(a * low.e_per_adu / reference.e_per_adu),
        reference_gain_e_per_adu=float(reference.e_per_adu),
        reference_offset_adu=float(reference.offset_adu),
    )


def _reference_photometry(
    run: Run,
    frames: list[np.ndarray],
    dark: list[np.ndarray],
    gain: float | None,
) -> Photometry:
    """The reference camera's photometry: as given, from the rig model (declared or
    measured), else measured from its frames (and dark frames) now."""
    known = rig_model_for_run(run).reference.photometry
    if gain is not None:
        offset = known.offset_adu
        if dark:
            offset = float(np.mean([d.mean() for d in dark]))
        if offset is None:
            offset = photometry_from_frames(frames).offset_adu
        return Photometry(
            e_per_adu=gain,
            offset_adu=offset,
            read_noise_e=known.read_noise_e,
            source="declared",
            method="given",
        )
    if known.known:
        return known
    try:
        measured = photometry_from_frames(frames, dark_frames=dark)
    except PhotometryError as exc:
        raise ValueError(
            f"{run.path}: the reference camera's photometry is unknown and its frames "
            f"cannot give it ({exc}); {PHOTOMETRY_FIX}"
        ) from None
    logger.info("reference camera photometry: %s", measured.describe())
    return measured
