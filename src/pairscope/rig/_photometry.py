"""Measure a camera's photometry: the photon-transfer method (EMVA 1288), from a
dark and a flat series, or from the frames of a run.

Photon transfer: a pixel of mean ``μ`` ADU has temporal variance
``σ² = K·(μ − μ_dark) + σ_dark²`` (``K`` in ADU/e⁻, so ``e_per_adu = 1/K``; read
noise ``σ_dark/K`` e⁻).  From a series (:func:`photometry_from_series`), the variance
of the difference of two frames at one exposure (half of it) removes the fixed
pattern.  From a run's frames (:func:`photometry_from_frames`) the specimen is not
flat: the variance comes from a high-pass residual of each frame in bins of the
local mean, scaled by the filter's own noise gain; the dark level from the darkest
pixels (or the run's dark frames).  Less precise than a series (a few %), but it
needs nothing but the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import convolve, gaussian_filter, uniform_filter

from ._model import Photometry

__all__ = ["PhotometryError", "photometry_from_frames", "photometry_from_series"]

_QUANT_VAR = 1 / 12  # variance added by rounding to integer ADU
MIN_ELECTRONS_SPAN = 20.0  # the brightest bin must hold this many e- above dark


class PhotometryError(ValueError):
    """The frames cannot give a photon-transfer fit (saturated, dark-only, no noise)."""


def _line(mean: np.ndarray, var: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Weighted least squares ``var = slope·mean + intercept``."""
    w = np.sqrt(weight)
    slope, intercept = np.polynomial.polynomial.polyfit(mean, var, 1, w=w)[::-1]
    return float(slope), float(intercept)


def _photometry(slope: float, offset: float, dark_var: float, method: str) -> Photometry:
    if not math.isfinite(slope) or slope <= 0:
        raise PhotometryError(
            "the frames' variance does not grow with their signal (no measurable "
            "shot noise: a simulated camera without noise, or frames of one level)"
        )
    e_per_adu = 1.0 / slope
    return Photometry(
        e_per_adu=e_per_adu,
        offset_adu=offset,
        read_noise_e=e_per_adu * math.sqrt(max(dark_var, 0.0)),
        source="measured",
        method=method,
    )


def _saturation(frames: Sequence[np.ndarray]) -> float | None:
    dtype = np.asarray(frames[0]).dtype
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else None


def photometry_from_series(
    dark: Sequence[np.ndarray], flats: Sequence[Sequence[np.ndarray]]
) -> Photometry:
    """EMVA 1288 photon transfer: ``dark`` frames (≥ 2) and, per exposure (≥ 2
    levels), ≥ 2 flat frames.  Saturated or dark-only levels are refused."""
    if len(dark) < 2:
        raise PhotometryError("the dark series needs at least 2 frames")
    d = np.stack([np.asarray(f, np.float64) for f in dark])
    dark_mean = float(d.mean())
    dark_var = float(np.diff(d[:2], axis=0).var() / 2) - _QUANT_VAR
    top = _saturation(dark)
    means, variances = [], []
    for level, frames in enumerate(flats):
        if len(frames) < 2:
            raise PhotometryError(f"flat level {level} needs at least 2 frames")
        a, b = (np.asarray(f, np.float64) for f in frames[:2])
        if top is not None and max(a.max(), b.max()) >= top:
            raise PhotometryError(
                f"flat level {level} is saturated ({int(top)} ADU): lower the light "
                "or the exposure"
            )
        means.append((a.mean() + b.mean()) / 2 - dark_mean)
        variances.append(float((a - b).var() / 2) - _QUANT_VAR)
    x, y = np.asarray(means), np.asarray(variances)
    if x.size < 2 or x.max() <= 0 or np.ptp(x) < 1.0:
        raise PhotometryError(
            "the flat series is no brighter than the dark one (the light is off?): "
            "turn the light on or lengthen the exposures"
        )
    slope = float(np.sum(x * (y - dark_var)) / np.sum(x * x))  # through σ_dark²
    return _photometry(
        slope,
        dark_mean,
        dark_var,
        f"photon transfer: {len(dark)} dark frames, {x.size} flat levels",
    )


#: Immerkær's kernel: blind to a plane and to most of a smooth specimen; its
#: residual ``conv(x, K) / 6`` has the variance of the pixel noise (Σ K² = 36)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
STRUCTURE_KEPT = 95.0  # percent of pixels kept (the most structured 5 % dropped)


def photometry_from_frames(
    frames: Sequence[np.ndarray],
    *,
    dark_frames: Sequence[np.ndarray] = (),
    n_bins: int = 40,
) -> Photometry:
    """The photometry of a camera from its own frames of a specimen (module doc)."""
    if not frames:
        raise PhotometryError("no frames to measure")
    top = _saturation(frames)
    local_means, local_vars = [], []
    for frame in frames:
        x = np.asarray(frame, np.float64)
        r = convolve(x, _IMMERKAER, mode="reflect") / 6.0
        m = uniform_filter(x, 3, mode="reflect")
        structure = np.abs(convolve(gaussian_filter(x, 1.5), _IMMERKAER, mode="reflect"))
        ok = structure <= np.percentile(structure, STRUCTURE_KEPT)
        if top is not None:
            ok &= uniform_filter((x >= top).astype(np.float64), 5) == 0
        edge = 3
        ok[:edge], ok[-edge:], ok[:, :edge], ok[:, -edge:] = False, False, False, False
        local_means.append(m[ok])
        local_vars.append(r[ok] ** 2)
    mean, var = np.concatenate(local_means), np.concatenate(local_vars)
    if mean.size < 1000:
        raise PhotometryError("too few usable pixels (saturated frames?)")
    if dark_frames:
        dstack = np.stack([np.asarray(f, np.float64) for f in dark_frames])
        offset = float(dstack.mean())
    else:
        offset = float(np.percentile(mean, 0.5))
    order = np.argsort(mean)
    xs, ys, ws = [], [], []
    for chunk in np.array_split(order, n_bins):
        if chunk.size < 200:
            continue
        v = float(np.median(var[chunk]) / 0.4549) - _QUANT_VAR  # χ²₁ median → mean
        xs.append(float(mean[chunk].mean()) - offset)
        ys.append(v)
        ws.append(1.0)  # unweighted: bright bins set the slope (structure leaks into dim ones)
    x, y, w = map(np.asarray, (xs, ys, ws))
    if x.size < 3 or np.ptp(x) <= 0:
        raise PhotometryError("the frames hold one level only: no photon-transfer fit")
    slope, intercept = _line(x, y, w)
    photometry = _photometry(
        slope, offset, intercept, f"photon transfer of {len(frames)} run frames"
    )
    assert photometry.e_per_adu is not None
    if x.max() * photometry.e_per_adu < MIN_ELECTRONS_SPAN:
        raise PhotometryError(
            "the frames hold too few photoelectrons above the dark level for a "
            "photon-transfer fit"
        )
    return photometry
