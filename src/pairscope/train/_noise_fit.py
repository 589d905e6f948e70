"""Photon-transfer fit of the low-dose camera from logged pairs (and dark frames).

Model (``g`` in e⁻/ADU, ``σ`` the read noise in e⁻): a low-dose pixel with mean ``μ``
ADU has variance ``(μ - offset)/g + (σ/g)²``.  The specimen moves, so ``μ`` comes
from the simultaneous reference: ``μ ≈ offset + a·B``, ``B`` the reference minus its
offset, registered (``calibration.json``) and sum-binned to the low-dose grid.

The reference is not noise-free: the residual ``L - μ`` has variance
``Var(L) + a²·Var(B)``, and ``Var(B) = κ·((B/f²)/g_ref + σ_ref²)`` (ADU, ``κ`` the
noise gain of warp + bin, measured on white noise).  That term is subtracted per bin;
it needs the *reference* camera's gain, taken from the manifest (the device's
``Gain`` property) unless given; this is the method's one assumption.

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
from typing import Any

import numpy as np

from pairscope._binning import bin_sum
from pairscope.io import Run, open_run
from pairscope.io.calibration import (
    Registration,
    apply_registration,
    registration_or_estimate,
)

__all__ = ["NoiseModel", "fit_noise_model"]

logger = logging.getLogger(__name__)

_QUANT_VAR = 1 / 12  # variance added by rounding to integer ADU


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
) -> NoiseModel:
    """Fit :class:`NoiseModel` for the low-dose camera of ``runs`` (module doc)."""
    opened = [r if isinstance(r, Run) else open_run(r) for r in runs]
    darks = [r if isinstance(r, Run) else open_run(r) for r in dark_runs]
    f = opened[0].factor
    light: list[tuple[np.ndarray, np.ndarray, Registration]] = []
    dark_low: list[np.ndarray] = []
    dark_ref: list[np.ndarray] = []
    for run in opened + darks:
        is_dark_run = run in darks
        reg = Registration() if is_dark_run else registration_or_estimate(run)
        for i in range(len(run)):
            rec = run.records[i]
            dark = is_dark_run or float(rec.get("light_power", 1.0)) == 0
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
                light.append((p.lowdose.astype(np.float64), p.reference, reg))
    if not light:
        raise ValueError(
            "no illuminated pairs with a simultaneous reference to fit (sequential "
            "pairs see the specimen at two instants): acquire in a simultaneous or "
            "triggered mode"
        )
    light = light[:: max(1, math.ceil(len(light) / max_pairs))]
    meta = _reference_meta(opened[0])
    g_ref = reference_gain_e_per_adu or meta["gain"]
    off_ref, var_ref = _dark_stats(dark_ref)
    if math.isnan(off_ref):
        off_ref, var_ref = meta["offset"], (meta["read_noise_e"] / g_ref) ** 2
    off_low, var_read = _dark_stats(dark_low)

    # predictor B and its noise (in reference ADU, summed over f x f)
    low_px, b_px, vb_px = [], [], []
    for low, ref, reg in light:
        kappa = _noise_gain(reg, f, ref.shape)
        b = bin_sum(apply_registration(ref.astype(np.float32) - off_ref, reg), f)
        m = math.ceil(max(abs(reg.shift_y_px), abs(reg.shift_x_px)) / f) + 2
        sl = (slice(m, -m), slice(m, -m))
        b = b[sl].astype(np.float64)
        low_px.append(low[sl].ravel())
        b_px.append(b.ravel())
        vb_px.append((kappa * (np.maximum(b, 0) / f**2 / g_ref + var_ref)).ravel())
    lo, b, vb = map(np.concatenate, (low_px, b_px, vb_px))

    if math.isnan(off_low):  # errors-in-variables corrected regression
        a = np.cov(lo, b)[0, 1] / (b.var() - vb.mean())
        off_low = float(lo.mean() - a * b.mean())
    else:
        a = (lo.mean() - off_low) / b.mean()
    resid = lo - off_low - a * b
    order = np.argsort(b)
    means, variances, weights = [], [], []
    for chunk in np.array_split(order, n_bins):
        if chunk.size < 100:
            continue
        v = resid[chunk].var() - a**2 * vb[chunk].mean() - _QUANT_VAR
        means.append(lo[chunk].mean() - off_low)
        variances.append(v)
        weights.append(chunk.size / max(v, 1.0) ** 2)
    x, y, w = map(np.asarray, (means, variances, weights))
    if math.isnan(var_read):
        slope, intercept = np.polynomial.polynomial.polyfit(x, y, 1, w=np.sqrt(w))[::-1]
        var_read = float(intercept)
    else:  # intercept known from the dark frames: fit the slope only
        slope = float(np.sum(w * x * (y - var_read)) / np.sum(w * x * x))
    gain = 1.0 / float(slope)
    return NoiseModel(
        gain_e_per_adu=gain,
        offset_adu=float(off_low),
        read_noise_e=gain * math.sqrt(max(var_read, 0.0)),
        n_points=int(lo.size),
        dose_ratio=float(a * gain / g_ref),
        reference_gain_e_per_adu=float(g_ref),
        reference_offset_adu=float(off_ref),
    )


def _dark_stats(frames: list[np.ndarray]) -> tuple[float, float]:
    """Offset and read-noise variance (ADU²) of dark frames; ``nan`` if none."""
    if not frames:
        return math.nan, math.nan
    stack = np.stack(frames)
    # temporal variance per pixel (fixed pattern removed) when there are several
    var = stack.var(axis=0, ddof=1).mean() if len(frames) > 1 else stack.var()
    return float(stack.mean()), float(var - _QUANT_VAR)


def _noise_gain(reg: Registration, f: int, shape: tuple[int, ...]) -> float:
    """Variance of ``bin(warp(noise))`` for unit white noise (``f²`` without warp)."""
    rng = np.random.default_rng(0)
    n = min(128, shape[0], shape[1])
    noise = rng.standard_normal((n, n)).astype(np.float32)
    out = bin_sum(apply_registration(noise, reg), f)[4:-4, 4:-4]
    return float(out.var())


def _reference_meta(run: Run) -> dict[str, Any]:
    """Reference camera gain/offset/read noise from the manifest and run.json."""
    rec = next(r for r in run.records if r.get("reference"))
    label = run.info.get("detectors", {}).get("reference") or ""
    props = run.info.get("system_state", {}).get(label, {})
    gain = props.get("Gain") or rec["reference"].get("gain")
    if gain is None:
        raise ValueError(
            f"{run.path}: the reference camera's gain is not recorded; pass "
            "reference_gain_e_per_adu"
        )
    return {
        "gain": float(gain),
        "offset": float(props.get("Offset", "nan")),
        "read_noise_e": float(props.get("ReadNoise_e", 0.0)),
    }
