"""Measure a camera's photometry: the photon-transfer method (EMVA 1288), from a
dark and a flat series, or from the frames of a run.

Photon transfer: a pixel of mean ``μ`` ADU has temporal variance
``σ² = K·(μ − μ_dark) + σ_dark²`` (``K`` in ADU/e⁻, so ``e_per_adu = 1/K``; read
noise ``σ_dark/K`` e⁻).  From a series (:func:`photometry_from_series`), the variance
of the difference of two frames at one exposure (half of it) removes the fixed
pattern.  From a run's frames (:func:`photometry_from_frames`) the specimen is not
flat: the variance comes from a high-pass residual of each frame in bins of the
local mean, scaled by the filter's own noise gain (spatial), and from the
difference of consecutive frames in bins of their mean (temporal); the dark level
from the darkest pixels (or the run's dark frames).  Each can only overstate the
noise: structure leaks into the spatial residual where no pixel is flat (a bead
slide's bright pixels are all on beads), motion or flicker into the temporal
difference (a moving specimen), so the fit with the lower slope (the higher
e⁻/ADU) is kept.  Less precise than a series (a few %), but it needs nothing but
the run.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import convolve, gaussian_filter, uniform_filter

from ._model import Photometry

__all__ = [
    "PhotometryError",
    "paired_photon_transfer",
    "photometry_from_frames",
    "photometry_from_pairs",
    "photometry_from_series",
]

_QUANT_VAR = 1 / 12  # variance added by rounding to integer ADU
MIN_ELECTRONS_SPAN = 20.0  # the brightest bin must hold this many e- above dark


class PhotometryError(ValueError):
    """The frames cannot give a photon-transfer fit (saturated, dark-only, no noise)."""


def _line(mean: np.ndarray, var: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Weighted least squares ``var = slope·mean + intercept``."""
    w = np.sqrt(weight)
    slope, intercept = np.polynomial.polynomial.polyfit(mean, var, 1, w=w)[::-1]
    return float(slope), float(intercept)


def _photometry(
    slope: float, offset: float, dark_var: float, method: str
) -> Photometry:
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
        structure = np.abs(
            convolve(gaussian_filter(x, 1.5), _IMMERKAER, mode="reflect")
        )
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
    fits = [_transfer_fit(mean, var, offset, n_bins, "spatial")]
    if len(frames) > 1:
        t_mean, t_var = _temporal(frames, top)
        if t_mean.size >= 1000:
            with contextlib.suppress(PhotometryError):  # the spatial fit stands
                fits.append(_transfer_fit(t_mean, t_var, offset, n_bins, "temporal"))
    usable = [f for f in fits if f[0] > 0 and math.isfinite(f[0])]
    slope, intercept, span, how = min(usable or fits)  # the less overstated noise
    photometry = _photometry(
        slope, offset, intercept, f"photon transfer of {len(frames)} run frames ({how})"
    )
    assert photometry.e_per_adu is not None
    if span * photometry.e_per_adu < MIN_ELECTRONS_SPAN:
        raise PhotometryError(
            "the frames hold too few photoelectrons above the dark level for a "
            "photon-transfer fit"
        )
    return photometry


def _temporal(
    frames: Sequence[np.ndarray], top: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half the squared difference of each pair of consecutive frames
    (pixels saturated in either left out)."""
    means, vars_ = [], []
    for a, b in itertools.pairwise(frames):
        x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if x.shape != y.shape:
            continue
        ok = np.ones(x.shape, bool)
        if top is not None:
            ok &= (x < top) & (y < top)
        means.append(((x + y) / 2)[ok])
        vars_.append(((x - y) ** 2 / 2)[ok])
    if not means:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(means), np.concatenate(vars_)


def _transfer_fit(
    mean: np.ndarray, var: np.ndarray, offset: float, n_bins: int, how: str
) -> tuple[float, float, float, str]:
    """``(slope, intercept, signal span, how)`` of the photon-transfer line through
    the bins of ``mean`` (each bin's variance: the median of ``var``, a χ²₁ sample
    per pixel, made a mean).  Unweighted: the bright bins set the slope (structure
    leaks into the dim ones)."""
    order = np.argsort(mean)
    xs, ys = [], []
    for chunk in np.array_split(order, n_bins):
        if chunk.size < 200:
            continue
        v = float(np.median(var[chunk]) / 0.4549) - _QUANT_VAR  # χ²₁ median → mean
        xs.append(float(mean[chunk].mean()) - offset)
        ys.append(v)
    x, y = np.asarray(xs), np.asarray(ys)
    if x.size < 3 or np.ptp(x) <= 0:
        raise PhotometryError("the frames hold one level only: no photon-transfer fit")
    slope, intercept = _line(x, y, np.ones_like(x))
    return slope, intercept, float(x.max()), how


def paired_photon_transfer(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    factor: int,
    reference: Photometry,
    registration: object | Sequence[object] | None = None,
    *,
    dark_lowdose: Sequence[np.ndarray] = (),
    n_bins: int = 40,
) -> tuple[Photometry, float]:
    """The low-dose camera's photometry from same-instant pairs, and ``a``: low-dose
    ADU per reference ADU above the offsets (see :func:`photometry_from_pairs`)."""
    from .._binning import bin_sum
    from ..io.calibration import Registration, apply_registration

    if not pairs:
        raise PhotometryError("no same-instant pairs to fit")
    if reference.e_per_adu is None or reference.offset_adu is None:
        raise PhotometryError("the reference camera's photometry is needed first")
    if isinstance(registration, Sequence):  # one per pair (pairs of several runs)
        regs = [
            r if isinstance(r, Registration) else Registration() for r in registration
        ]
    else:
        one = registration if isinstance(registration, Registration) else Registration()
        regs = [one] * len(pairs)
    if len(regs) != len(pairs):
        raise ValueError("one registration per pair, or one for all")
    g_ref, off_ref = reference.e_per_adu, reference.offset_adu
    var_ref = ((reference.read_noise_e or 0.0) / g_ref) ** 2
    off_low, var_read = math.nan, math.nan
    if len(dark_lowdose) > 0:
        d = np.stack([np.asarray(f, np.float64) for f in dark_lowdose])
        off_low = float(d.mean())
        var_read = (
            float(d.var(axis=0, ddof=1).mean()) if len(d) > 1 else float(d.var())
        ) - _QUANT_VAR
    f = factor
    low_px, b_px, vb_px = [], [], []
    gains: dict[object, float] = {}
    for (low, ref), reg in zip(pairs, regs, strict=True):
        if reg not in gains:
            gains[reg] = _warp_bin_noise_gain(reg, f, np.asarray(ref).shape)
        kappa = gains[reg]
        m = math.ceil(max(abs(reg.shift_y_px), abs(reg.shift_x_px)) / f) + 2
        sl = (slice(m, -m), slice(m, -m))
        b = bin_sum(apply_registration(np.asarray(ref, np.float32) - off_ref, reg), f)
        b = b[sl].astype(np.float64)
        low_px.append(np.asarray(low, np.float64)[sl].ravel())
        b_px.append(b.ravel())
        vb_px.append((kappa * (np.maximum(b, 0) / f**2 / g_ref + var_ref)).ravel())
    lo, b, vb = map(np.concatenate, (low_px, b_px, vb_px))
    if b.var() <= vb.mean():
        raise PhotometryError("the pairs show no specimen structure to fit against")
    if math.isnan(off_low):  # errors-in-variables corrected regression
        a = float(np.cov(lo, b)[0, 1] / (b.var() - vb.mean()))
        off_low = float(lo.mean() - a * b.mean())
    else:
        a = float((lo.mean() - off_low) / b.mean())
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
    if x.size < 3:
        raise PhotometryError("too few pixels in the pairs for a photon-transfer fit")
    if math.isnan(var_read):
        slope, var_read = _line(x, y, w)
    else:  # intercept known from the dark frames: fit the slope only
        slope = float(np.sum(w * x * (y - var_read)) / np.sum(w * x * x))
    method = f"paired photon transfer against the reference, {lo.size} pixels"
    return _photometry(slope, off_low, var_read, method), a


def photometry_from_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    factor: int,
    reference: Photometry,
    registration: object | None = None,
    *,
    dark_lowdose: Sequence[np.ndarray] = (),
) -> Photometry:
    """The dim low-dose camera's photometry from same-instant ``(low, ref)`` pairs.

    The specimen moves, so each low-dose pixel's mean comes from the simultaneous
    reference (its photometry known), registered and sum-binned by ``factor``:
    ``μ ≈ offset + a·B``.  The residual's variance, less the reference's own noise
    carried through warp and bin, against ``μ`` is the photon-transfer line.
    Offset and read noise come from ``dark_lowdose`` frames when given, else from
    an errors-in-variables regression and the line's intercept.
    """
    return paired_photon_transfer(
        pairs, factor, reference, registration, dark_lowdose=dark_lowdose
    )[0]


def _warp_bin_noise_gain(reg: object, f: int, shape: tuple[int, ...]) -> float:
    """Variance of ``bin(warp(noise))`` for unit white noise (``f²`` without warp)."""
    from .._binning import bin_sum
    from ..io.calibration import apply_registration

    rng = np.random.default_rng(0)
    n = min(128, shape[0], shape[1])
    noise = rng.standard_normal((n, n)).astype(np.float32)
    out = bin_sum(apply_registration(noise, reg), f)[4:-4, 4:-4]  # type: ignore[arg-type]
    return float(out.var())
