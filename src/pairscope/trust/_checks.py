"""One trust check: a restored frame against its reference and its own input.

Everything is measured in units of the cameras' fitted Poisson-Gaussian noise, so a
perfect (noise-free) prediction scores 1 and the thresholds mean the same on every
set-up (see :class:`Thresholds`).

Reference checks (a pair with a reference): the reference is resampled onto the
low-dose camera's frame with the camera registration (where restored frames live);
the restored frame and the bicubic baseline (on offset-subtracted data) are each
least-squares affine-fitted to it and scored with PSNR on a fixed data range (the
target's 0.1-99.9 % percentile span = 1.0); the model's *advantage* is their PSNR
difference.  (SSIM, which no verdict uses, is left to ``pairscope evaluate``: the
live check runs on every pair and keeps to what its verdicts need.)  The
SQUIRREL-style error map is the squared error of the fitted restoration over the
reference's expected noise variance at that intensity, after a *local* affine fit in
windows of ``WINDOW_RAYLEIGH`` Rayleigh distances (so a few percent of brightness
error on a bright, well-restored structure does not count; structure that is wrong or
missing does): ``error_excess_local`` is its value over the worst window-sized area.

Data consistency (every pair, reference or not): the restored frame, offset removed,
is charge-binned to the low-dose grid (optionally blurred by an extra PSF first),
scaled by the dose ratio fitted on this frame, the low-dose offset added; its
residual against the low-dose input in units of the low-dose camera's fitted noise
gives ``consistency_chi2`` (the frame) and ``consistency_chi2_local`` (the worst
Gaussian window of ``CONSISTENCY_SIGMA_PX`` low-dose pixels).  It needs no
reference, so it covers the frames between sparse references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from .._binning import bin_sum
from ..io import same_instant
from ..io.calibration import Registration, apply_registration
from ..metrics import TargetScores, affine_fit, upsample

__all__ = [
    "CONSISTENCY_SIGMA_PX",
    "WINDOW_RAYLEIGH",
    "CameraNoise",
    "CheckResult",
    "Thresholds",
    "TrustCalibration",
    "check_pair",
    "register_reference",
    "registered_crop",
    "same_instant",
]

Verdict = Literal["ok", "warn", "alarm"]
WINDOW_RAYLEIGH = 12.0  # local error window, in Rayleigh distances
CONSISTENCY_SIGMA_PX = 4.0  # consistency window (Gaussian sigma, low-dose pixels)
DATA_RANGE = 1.0  # PSNR/SSIM: the target's 0.1-99.9 % span after normalisation
SSIM_SIGMA_PX = 1.5
_QUANT_VAR = 1 / 12  # rounding to integer ADU


@dataclass(frozen=True, slots=True)
class CameraNoise:
    """Poisson-Gaussian model of one camera: ``var = (mean - offset)/gain + (read/gain)²``.

    ``photometry_source``: where the figures come from (the rig model's ``declared``
    or ``measured``, or ``rough estimate``); ``photometry_method`` how.
    """

    gain_e_per_adu: float
    offset_adu: float
    read_noise_e: float
    photometry_source: str = ""
    photometry_method: str = ""

    def variance(self, mean_adu: np.ndarray) -> np.ndarray:
        """Expected variance (ADU²) of pixels whose expectation is ``mean_adu``."""
        g = self.gain_e_per_adu
        signal = np.maximum(np.asarray(mean_adu, np.float64) - self.offset_adu, 0.0)
        return signal / g + (self.read_noise_e / g) ** 2 + _QUANT_VAR


@dataclass(frozen=True)
class Thresholds:
    """Verdict levels, in units of the fitted noise (1 = what noise alone gives).

    ``error_*``: restored-vs-reference error variance over the reference's noise
    variance.  An ideal prediction scores 1 ± sqrt(2/n) (n pixels; the warp that
    registers the reference smooths its noise, so about 0.8).  The demo model,
    matched to its data, scores at most about 3 over the frame and 8 in its worst
    window (where sub-Rayleigh bead pairs it cannot resolve are in view; 14 for the
    model shipped before), measured by ``scripts/bench_trust.py`` (its
    ``familiar_worst``).  So: up to ``error_ok`` (4) times the noise
    variance over the frame and ``local_ok`` (16) in the worst window is ok, beyond
    ``*_alarm`` (twice those) an alarm, between a warning.
    ``consistency_*``: reduced chi² of the re-degraded restoration against the
    low-dose input; noise alone gives 1 ± sqrt(2/n_eff) (n_eff = 4π·sigma² ≈ 200
    pixels in a window, sd 0.1), so the local levels are 10 and 20 sd above 1.
    ``advantage_db``: the model scoring below bicubic by more than this warns.
    """

    error_ok: float = 4.0
    error_alarm: float = 8.0
    local_ok: float = 16.0
    local_alarm: float = 32.0
    consistency_ok: float = 1.5
    consistency_alarm: float = 3.0
    consistency_local_ok: float = 2.0
    consistency_local_alarm: float = 3.0
    advantage_db: float = -1.0


@dataclass(frozen=True)
class TrustCalibration:
    """What the checks need to know about the rig.

    ``registration`` maps the reference onto the low-dose camera's frame;
    ``rayleigh_px`` the Rayleigh distance in reference pixels (sets the error-map
    scale); ``psf_sigma_px`` an extra Gaussian blur of the low-dose path (reference
    pixels) for the forward model, 0 when both cameras share the objective's PSF;
    ``source`` says where the noise figures came from.
    """

    factor: int
    lowdose: CameraNoise
    reference: CameraNoise
    registration: Registration = field(default_factory=Registration)
    rayleigh_px: float = 2.0
    psf_sigma_px: float = 0.0
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class CheckResult:
    """The outcome of one check (one line of ``quality.jsonl`` plus the maps)."""

    pair: int
    verdict: Verdict
    reason: str
    metrics: dict[str, float | bool | None]
    error_map: np.ndarray | None = None  # local error / noise, reference grid
    consistency_map: np.ndarray | None = None  # low-dose grid
    ok_level: float = 0.0  # the error map's warn level (for overlays)
    #: the reference registered onto the restored frame's grid (a same-instant
    #: pair's), for the interval calibration
    reference_registered: np.ndarray | None = None
    #: the pixels outside the calibrated interval (restored grid), for the preview
    outside_map: np.ndarray | None = None

    def line(self) -> dict[str, Any]:
        """The JSON-ready record: ``pair``, ``verdict``, ``reason`` and the metrics."""
        out: dict[str, Any] = {
            "pair": self.pair,
            "verdict": self.verdict,
            "reason": self.reason,
        }
        for k, v in self.metrics.items():
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out


def registration_margin(cal: TrustCalibration) -> int:
    """Pixels at the frame edge that the registration leaves without data."""
    r = cal.registration
    return math.ceil(max(abs(r.shift_y_px), abs(r.shift_x_px))) + 2 * cal.factor


def registered_crop(
    cal: TrustCalibration, shape: tuple[int, ...]
) -> tuple[slice, slice]:
    """The part of a frame of ``shape`` away from the edges the registration
    filled in (the whole frame when it is too small to cut)."""
    m = registration_margin(cal)
    if min(shape[-2:]) <= 4 * m:
        return (slice(None), slice(None))
    return (slice(m, -m), slice(m, -m))


def _worst_area(values: np.ndarray, area_px: float) -> float:
    """The value exceeded over an area of ``area_px`` pixels (a high quantile)."""
    q = 1.0 - min(0.5, area_px / max(values.size, 1))
    return float(np.quantile(values, q))


def local_error_map(
    restored: np.ndarray, target: np.ndarray, noise: CameraNoise, window: int
) -> np.ndarray:
    """Error variance over noise variance after a local affine fit (box ``window``)."""

    def box(x: np.ndarray) -> np.ndarray:
        return uniform_filter(x, window, mode="reflect")

    # float32 about the mean: local (co)variances keep their precision
    centre = float(np.mean(target))
    r = np.asarray(restored, np.float32) - np.float32(centre)
    t = np.asarray(target, np.float32) - np.float32(centre)
    mp, mt = box(r), box(t)
    cpp = box(r * r) - mp * mp
    cpt = box(r * t) - mp * mt
    ctt = box(t * t) - mt * mt
    a = np.clip(cpt / np.maximum(cpp, 1e-12), 0.0, None)  # no contrast inversion
    residual = np.maximum(ctt - 2 * a * cpt + a * a * cpp, 0.0)
    return residual / box(np.asarray(noise.variance(restored), np.float32))


def check_pair(
    index: int,
    restored: np.ndarray,
    lowdose: np.ndarray,
    reference: np.ndarray | None,
    cal: TrustCalibration,
    thresholds: Thresholds | None = None,
    *,
    simultaneous: bool = True,
    registered: np.ndarray | None = None,
) -> CheckResult:
    """Check one restored frame (module doc); never uses more than the pair itself.

    A reference that is not of the same instant (``simultaneous=False``: a
    sequential pair) is not compared with: the pair gets the consistency check only.
    ``registered``: the reference already registered (:func:`register_reference`).
    """
    th = thresholds or Thresholds()
    f = cal.factor
    rest = np.asarray(restored, dtype=np.float64)
    low = np.asarray(lowdose, dtype=np.float64)
    if not simultaneous:
        reference = None
    metrics: dict[str, float | bool | None] = {
        "has_reference": reference is not None,
        "simultaneous": simultaneous,
    }
    reasons: list[tuple[int, str]] = []  # (severity 1 warn / 2 alarm, text)

    def grade(value: float, ok: float, alarm: float, text: str) -> None:
        if value > alarm:
            reasons.append((2, f"{text} {value:.3g} > {alarm:g}"))
        elif value > ok:
            reasons.append((1, f"{text} {value:.3g} > {ok:g}"))

    # -- data consistency (no reference needed)
    cons_map = _consistency(rest, low, cal, metrics)
    lm = max(1, registration_margin(cal) // f)
    inner = cons_map[lm:-lm, lm:-lm] if cons_map.shape[0] > 4 * lm else cons_map
    metrics["consistency_chi2"] = float(inner.mean())
    smooth = gaussian_filter(inner, CONSISTENCY_SIGMA_PX, mode="reflect")
    metrics["consistency_chi2_local"] = float(smooth.max())
    grade(
        cast(float, metrics["consistency_chi2"]),  # a float, set above
        th.consistency_ok,
        th.consistency_alarm,
        "restored frame inconsistent with its low-dose input: chi2",
    )
    grade(
        cast(float, metrics["consistency_chi2_local"]),  # a float, set above
        th.consistency_local_ok,
        th.consistency_local_alarm,
        "restored structure the low-dose data do not support: local chi2",
    )
    # -- against the reference
    err_map = None
    if reference is None:
        registered = None
    else:
        if registered is None:
            registered = register_reference(reference, cal)
        err_map = _reference_checks(rest, low, registered, cal, metrics)
        grade(
            cast(float, metrics["error_excess"]),  # a float (_reference_checks)
            th.error_ok,
            th.error_alarm,
            "error vs reference beyond its noise: excess",
        )
        grade(
            cast(float, metrics["error_excess_local"]),  # a float (_reference_checks)
            th.local_ok,
            th.local_alarm,
            "local error vs reference (unseen or invented structure?): excess",
        )
        adv = metrics["advantage_db"]
        if adv is not None and adv < th.advantage_db:
            reasons.append((1, f"model {adv:+.2f} dB vs bicubic (worse than baseline)"))
    severity = max((s for s, _ in reasons), default=0)
    verdict: Verdict = ("ok", "warn", "alarm")[severity]
    reason = "; ".join(t for s, t in sorted(reasons, reverse=True)) or (
        "within the noise model" if reference is not None else "consistent with input"
    )
    if not simultaneous:
        reason += " (reference not of the same instant: consistency only)"
    return CheckResult(
        index,
        verdict,
        reason,
        metrics,
        err_map,
        smooth,
        ok_level=th.local_ok,
        reference_registered=registered,
    )


def _consistency(
    rest: np.ndarray,
    low: np.ndarray,
    cal: TrustCalibration,
    metrics: dict[str, float | bool | None],
) -> np.ndarray:
    """chi² map (low-dose grid) of the re-degraded restoration vs the input."""
    x = rest - cal.reference.offset_adu
    if cal.psf_sigma_px:
        x = gaussian_filter(x, cal.psf_sigma_px, mode="reflect")
    degraded = bin_sum(x, cal.factor)
    if degraded.shape != low.shape:
        raise ValueError(
            f"restored frame {rest.shape} does not bin to the low-dose frame "
            f"{low.shape} at factor {cal.factor}"
        )
    signal = low - cal.lowdose.offset_adu
    denom = float(np.sum(degraded * degraded))
    a = float(np.sum(degraded * signal)) / denom if denom > 0 else 0.0
    metrics["dose_ratio"] = a
    predicted = cal.lowdose.offset_adu + a * degraded
    return (low - predicted) ** 2 / cal.lowdose.variance(predicted)


def register_reference(reference: np.ndarray, cal: TrustCalibration) -> np.ndarray:
    """The reference on the restored frame's grid (float32)."""
    return apply_registration(np.asarray(reference, np.float32), cal.registration)


def _reference_checks(
    rest: np.ndarray,
    low: np.ndarray,
    ref: np.ndarray,
    cal: TrustCalibration,
    metrics: dict[str, float | bool | None],
) -> np.ndarray:
    """The error map on the restored grid (``ref``: the registered reference)."""
    crop = registered_crop(cal, ref.shape)
    target = ref.astype(np.float64)[crop]
    bicubic = upsample(low - cal.lowdose.offset_adu, cal.factor, "bicubic")[crop]
    model = rest[crop]
    scores = TargetScores(target, data_range=DATA_RANGE, scale_invariant=True)
    for name, img in (("model", model), ("bicubic", bicubic)):
        metrics[f"psnr_{name}"] = scores.psnr(img)
    metrics["advantage_db"] = float(metrics["psnr_model"]) - float(  # type: ignore[arg-type]
        metrics["psnr_bicubic"]  # type: ignore[arg-type]
    )
    fitted = affine_fit(model, target)
    var = cal.reference.variance(fitted)
    metrics["error_excess"] = float(np.sum((fitted - target) ** 2) / np.sum(var))
    window = max(8, round(WINDOW_RAYLEIGH * cal.rayleigh_px))
    emap = local_error_map(fitted, target, cal.reference, window)
    h = window // 2
    inner = emap[h:-h, h:-h] if min(emap.shape) > 2 * window else emap
    metrics["error_excess_local"] = _worst_area(inner, window * window)
    full = np.zeros(ref.shape, np.float32)  # the map on the full frame (0 at edges)
    full[crop] = emap
    return full
