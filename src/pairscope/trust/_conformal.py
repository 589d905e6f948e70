"""Per-pixel intervals with a coverage guarantee, calibrated live on the run's references.

**The model.** A restored frame ``r`` predicts the registered reference ``t``
(reference ADU) through the photometric map ``t ≈ a·r + b`` (the median of the
calibration pairs' least-squares fits, so a frame without a reference gets the
same map).  The residual ``e = t - (a·r + b)`` is the specimen error ``d`` plus the
reference's own noise ``n`` (Poisson-Gaussian, variance ``σn²(μ)`` from the rig
model's photometry).  The specimen error's scale ``σd`` is modelled per stratum of
predicted intensity × local structure (gradient magnitude of ``r``), 4 × 4 strata
with edges from the first calibration pairs: ``σd² = mean(e²) - mean(σn²)`` over the
stratum's calibration pixels (floored at 1 % of its noise variance).  A pixel's
score is ``s = |e| / σe`` with ``σe² = σd² + σn²``.

**Calibration** is conformal risk control over pairs (Angelopoulos et al., "Image-to-
image regression with distribution-free uncertainty quantification", ICML 2022;
"Conformal risk control", ICLR 2024): a pair's loss at ``λ`` is the fraction of its
pixels whose score exceeds ``λ``; ``λ̂`` is the smallest ``λ`` with
``(n·R̂(λ) + 1)/(n + 1) ≤ α``, ``R̂`` the mean loss of the ``n`` calibration pairs.
So, for a pair exchangeable with them, the expected fraction of pixels outside the
interval is at most ``α``.  The interval reported is **for the specimen**:
``a·r + b ± λ̂·σd`` (the reference's noise taken out of the width), in the restored
frame's units.  Its coverage is measured on held-out pairs with that noise put back,
``|e| ≤ λ̂·σe`` (the event a noisy reference can show); the two agree when ``d`` is,
within a stratum, of one scale family with ``e`` (e.g. Gaussian) — measured by the
held-out pairs, never assumed.

**Online.** Calibration pairs live in a sliding window (the last ``window``);
adaptive conformal inference (Gibbs & Candès, NeurIPS 2021) moves the working
level by ``γ(α - miss)`` after every reference pair's out-of-sample miss fraction,
so long-run coverage holds under drift.

**Schedule.** Which reference pair calibrates and which is held out depends on
their order only (every ``holdout_every``-th is held out), never on a verdict; a
pair whose reference was taken on demand (``reference_on_demand`` in its metadata,
e.g. because of an alarm) neither calibrates nor counts.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
from scipy.ndimage import uniform_filter

from .._fft_filter import gaussian_plan
from ..io.calibration import apply_registration
from ._checks import (
    WINDOW_RAYLEIGH,
    CameraNoise,
    TrustCalibration,
    registered_crop,
)

__all__ = [
    "ALPHA_DEFAULT",
    "ConformalIntervals",
    "Interval",
    "check_alpha",
    "registered_noise_factor",
]

Role = Literal["calibration", "heldout", "none"]
ALPHA_DEFAULT = 0.1
STRATA = 4  # bins per feature (intensity, structure)
SAMPLES_PER_PAIR = 4096  # pixels kept per calibration pair
STRUCTURE_SIGMA_PX = 1.0
MIN_STRATUM_PIXELS = 64
#: a pair whose coverage falls this far below 1 - α, or whose interval is this
#: many times wider than the calibration pairs', is flagged
COVERAGE_DROP = 0.15
WIDENING = 2.0
LOCAL_MARGIN = 0.05  # least distance below the usual local coverage that flags


def check_alpha(alpha: float) -> float:
    """``alpha`` if it is a usable risk level, else ValueError naming the range."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha <= 0.5):
        raise ValueError(
            f"alpha {alpha!r} is not a risk level in (0, 0.5]: 0.1 asks for "
            "intervals that hold 90 % of the specimen's pixels"
        )
    return float(alpha)


@dataclass(frozen=True, slots=True)
class Interval:
    """Per-pixel bounds of one restored frame, in its own units, at level ``alpha``."""

    lower: np.ndarray
    upper: np.ndarray
    alpha: float

    @property
    def mean_width(self) -> float:
        return float(np.mean(self.upper - self.lower))


@dataclass(slots=True)
class _Calibrated:
    """One calibration pair's kept pixels: residual, reference noise variance,
    stratum."""

    e: np.ndarray
    noise_var: np.ndarray
    stratum: np.ndarray


class ConformalIntervals:
    """Online conformal intervals for restored frames (module doc).

    Feed every reference pair with :meth:`observe` (the role from :meth:`role`);
    ask :meth:`interval` for any restored frame once :attr:`ready`.
    """

    def __init__(
        self,
        noise: CameraNoise,
        alpha: float = ALPHA_DEFAULT,
        *,
        holdout_every: int = 5,
        window: int = 200,
        gamma: float = 0.01,
        min_pairs: int | None = None,
        noise_factor: float = 1.0,
        window_px: int = 24,
        seed: int = 0,
    ) -> None:
        self.alpha = check_alpha(alpha)
        self.noise = noise
        #: the registered reference's noise variance over the camera's (the
        #: registration's interpolation averages neighbouring pixels' noise)
        self.noise_factor = noise_factor
        #: the side of the window whose worst miss fraction is the local coverage
        self.window_px = window_px
        self._local_misses: deque[float] = deque(maxlen=window)
        self.holdout_every = holdout_every
        self.gamma = gamma
        #: conformal risk control needs n > 1/α - 1 pairs to bound the risk by α
        self.min_pairs = min_pairs or max(10, math.ceil(1 / self.alpha))
        self._alpha_t = self.alpha  # adaptive working level
        self._pairs: deque[_Calibrated] = deque(maxlen=window)
        self._photometry: deque[tuple[float, float]] = deque(maxlen=window)
        self._edges: tuple[np.ndarray, np.ndarray] | None = None
        self._sigma_d2 = np.zeros(STRATA * STRATA)
        self._lambda = math.inf
        self._widths: deque[float] = deque(maxlen=window)
        self._heldout: list[float] = []
        self._rng = np.random.default_rng(seed)
        self._seen = 0  # reference pairs given a role
        #: the last reference pair's pixels outside the interval (its reference
        #: noise put back), for the preview; None before the calibration
        self.last_outside: np.ndarray | None = None
        #: observe (the monitor's thread) and interval (any thread: the
        #: prediction writer, the preview) share the calibration state
        self._lock = threading.RLock()

    # -- the schedule -------------------------------------------------------------
    def role(self, index: int, metadata: dict[str, Any] | None = None) -> Role:
        """What the next same-instant reference pair (pair ``index``) is for: every
        ``holdout_every``-th one is held out, by their order alone (module doc);
        call once per pair.  Sparse references (every N-th pair) are counted the
        same way, so they are held out too."""
        del index  # the order of reference pairs decides, not the pair index
        with self._lock:
            if (metadata or {}).get("reference_on_demand"):
                return "none"
            self._seen += 1
            return "heldout" if self._seen % self.holdout_every == 0 else "calibration"

    @property
    def ready(self) -> bool:
        return len(self._pairs) >= self.min_pairs and math.isfinite(self._lambda)

    @property
    def calibration_pairs(self) -> int:
        return len(self._pairs)

    # -- intervals ----------------------------------------------------------------
    def interval(self, restored: np.ndarray) -> Interval | None:
        """The specimen interval of ``restored`` (None before the calibration)."""
        with self._lock:
            return self._interval(restored)

    def _interval(self, restored: np.ndarray) -> Interval | None:
        if not self.ready:
            return None
        r = np.asarray(restored, np.float32)
        a, b = self._map()
        # the half-width in reference units, back in the restored frame's
        mu = np.float32(a) * r + np.float32(b)
        half = self._lambda * np.sqrt(self._sigma_d2[self._strata(r, mu, a)])
        half /= abs(a)
        return Interval(
            (r - half).astype(np.float32), (r + half).astype(np.float32), self.alpha
        )

    def observe(
        self, restored: np.ndarray, target: np.ndarray, role: Role
    ) -> dict[str, Any]:
        """Take one same-instant reference pair (``target``: the registered
        reference, same grid as ``restored``, edges already cut).

        Returns the pair's metrics: its out-of-sample ``coverage`` (before it
        calibrates anything), ``interval_width``, ``alpha`` and its role.
        """
        with self._lock:
            return self._observe(restored, target, role)

    def _observe(
        self, restored: np.ndarray, target: np.ndarray, role: Role
    ) -> dict[str, Any]:
        self.last_outside = None  # set again below once the pair is measured
        # float32 per pixel (a live check per pair); the fits accumulate in float64
        r = np.asarray(restored, np.float32)
        t = np.asarray(target, np.float32)
        out: dict[str, Any] = {"alpha": self.alpha, "interval_role": role}
        if role == "none":
            return out
        if role == "calibration":
            self._photometry.append(_fit_map(r, t))
        if not self._photometry:  # a held-out pair before any calibration pair
            return {**out, "coverage": None, "interval_width": None}
        a, b = self._map()
        mu = np.float32(a) * r + np.float32(b)
        if self._edges is None:
            self._edges = _edges(mu, _structure(r, a))
        e = t - mu
        noise_var = self.reference_variance(mu)
        stratum = self._strata(r, mu, a)
        if self.ready:  # out of sample: this pair has calibrated nothing yet
            sigma_e = np.sqrt(self._sigma_d2[stratum] + noise_var)
            missed = np.abs(e) > self._lambda * sigma_e
            self.last_outside = missed
            miss = float(np.mean(missed))
            local = _worst_window(missed, self.window_px)
            width = float(np.mean(2 * self._lambda * np.sqrt(self._sigma_d2[stratum])))
            out.update(
                coverage=1.0 - miss,
                coverage_local=1.0 - local,
                interval_width=width / abs(a),
            )
            out["coverage_local_usual"] = self._usual_local()
            self._alpha_t = float(
                np.clip(self._alpha_t + self.gamma * (self.alpha - miss), 1e-3, 0.5)
            )
            if role == "heldout":
                self._heldout.append(1.0 - miss)
            else:
                self._widths.append(width / abs(a))
                self._local_misses.append(local)
        else:
            out.update(coverage=None, coverage_local=None, interval_width=None)
        if role == "calibration":
            keep = self._rng.choice(
                e.size, min(SAMPLES_PER_PAIR, e.size), replace=False
            )
            self._pairs.append(
                _Calibrated(
                    e.ravel()[keep], noise_var.ravel()[keep], stratum.ravel()[keep]
                )
            )
            self._refit()
        return out

    def reference_variance(self, expected: np.ndarray) -> np.ndarray:
        """The registered reference's noise variance where its expectation is
        ``expected`` (reference ADU): the camera's, times the registration's
        noise factor."""
        return self.noise_factor * self.noise.variance(expected)

    def photometric_map(
        self, restored: np.ndarray, target: np.ndarray
    ) -> tuple[float, float]:
        """``(a, b)`` with ``target ≈ a·restored + b``: the calibration pairs' median
        map, or this pair's own least-squares fit before there is one."""
        with self._lock:
            if self._photometry:
                return self._map()
        return _fit_map(
            np.asarray(restored, np.float64), np.asarray(target, np.float64)
        )

    def _usual_local(self) -> float | None:
        """The lowest local coverage that is still usual: the calibration pairs'
        median (out of sample) less ten median absolute deviations (at least
        ``LOCAL_MARGIN``).  A median, so a shift stays flagged until it fills
        half the window, not from its first pair on."""
        if len(self._local_misses) < self.min_pairs:
            return None
        cov = 1.0 - np.asarray(self._local_misses)
        med = float(np.median(cov))
        mad = float(np.median(np.abs(cov - med)))
        return max(0.0, med - max(10 * mad, LOCAL_MARGIN))

    def flag(self, metrics: dict[str, Any]) -> str:
        """Why a pair's interval metrics need attention ("" if they do not)."""
        coverage, width = metrics.get("coverage"), metrics.get("interval_width")
        local, usual = (
            metrics.get("coverage_local"),
            metrics.get("coverage_local_usual"),
        )
        target = 1.0 - self.alpha
        if coverage is not None and coverage < target - COVERAGE_DROP:
            return (
                f"interval coverage {coverage:.2f} below its {target:.2f} target "
                "(structure the calibration pairs did not show?)"
            )
        if local is not None and usual is not None and local < usual:
            return (
                f"interval coverage {local:.2f} in its worst {self.window_px}-pixel "
                f"window, below the calibration pairs' usual {usual:.2f} (structure "
                "the model has not met?)"
            )
        if width is not None and self._widths:
            usual = float(np.median(self._widths))
            if usual > 0 and width > WIDENING * usual:
                return (
                    f"interval {width / usual:.1f}x wider than on the calibration pairs"
                )
        return ""

    def status(self) -> str:
        """One line: calibrating (k of n pairs) or calibrated."""
        if self.ready:
            return f"intervals calibrated on {len(self._pairs)} pairs (alpha {self.alpha:g})"
        return (
            f"intervals calibrating: {len(self._pairs)} of {self.min_pairs} reference "
            "pairs of one instant"
        )

    def summary(self) -> dict[str, Any]:
        """``quality_summary.json``'s ``coverage``: α, the target 1 - α, the mean
        held-out coverage and the held-out pairs it is measured on."""
        held = self._heldout
        return {
            "alpha": self.alpha,
            "target": 1.0 - self.alpha,
            "heldout": float(np.mean(held)) if held else None,
            "pairs": len(held),
            "calibration_pairs": len(self._pairs),
            "working_alpha": self._alpha_t,
            "lambda": self._lambda if math.isfinite(self._lambda) else None,
        }

    # -- internals ----------------------------------------------------------------
    def _map(self) -> tuple[float, float]:
        a, b = np.median(np.asarray(self._photometry), axis=0)
        return float(a) if abs(a) > 1e-12 else 1e-12, float(b)

    def _strata(self, r: np.ndarray, mu: np.ndarray, a: float) -> np.ndarray:
        assert self._edges is not None
        ei, es = self._edges
        i = np.searchsorted(ei, mu)
        s = np.searchsorted(es, _structure(r, a))
        return i * STRATA + s

    def _refit(self) -> None:
        """The scale model and λ̂ from the calibration pairs in the window."""
        e = np.concatenate([p.e for p in self._pairs])
        nv = np.concatenate([p.noise_var for p in self._pairs])
        st = np.concatenate([p.stratum for p in self._pairs])
        n_k = np.bincount(st, minlength=STRATA * STRATA)
        e2_k = np.bincount(st, e * e, minlength=STRATA * STRATA)
        nv_k = np.bincount(st, nv, minlength=STRATA * STRATA)
        overall = max(float(np.mean(e * e - nv)), 0.01 * float(np.mean(nv)))
        with np.errstate(invalid="ignore", divide="ignore"):
            d2 = np.maximum(e2_k / n_k - nv_k / n_k, 0.01 * nv_k / n_k)
        self._sigma_d2 = np.where(n_k >= MIN_STRATUM_PIXELS, d2, overall)
        n = len(self._pairs)
        level = self._alpha_t
        if n < self.min_pairs or (n + 1) * level - 1 <= 0:
            self._lambda = math.inf
            return
        scores = np.abs(e) / np.sqrt(self._sigma_d2[st] + nv)
        # R̂(λ) = fraction of pooled scores above λ (equal pixels per pair)
        q = 1.0 - ((n + 1) * level - 1) / n
        self._lambda = float(np.quantile(scores, min(q, 1.0), method="higher"))


def intervals_for(cal: TrustCalibration, alpha: float) -> ConformalIntervals:
    """Intervals for a rig's calibration: the reference's noise model, the noise
    factor of its registration, the error map's window."""
    factor = registered_noise_factor(partial(apply_registration, reg=cal.registration))
    return ConformalIntervals(
        cal.reference,
        alpha,
        noise_factor=factor,
        window_px=max(8, round(WINDOW_RAYLEIGH * cal.rayleigh_px)),
    )


def reference_target(
    cal: TrustCalibration, restored: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(restored, registered reference)`` with the registration's edge cut."""
    target = apply_registration(np.asarray(reference, np.float32), cal.registration)
    return crop_edges(cal, np.asarray(restored)), crop_edges(cal, target)


def crop_edges(cal: TrustCalibration, image: np.ndarray) -> np.ndarray:
    """``image`` without the edge the registration leaves without data."""
    return image[registered_crop(cal, image.shape)]


def uncrop_edges(
    cal: TrustCalibration, image: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """A :func:`crop_edges` map back on the full frame (0 at the edges)."""
    full = np.zeros(shape, image.dtype)
    full[registered_crop(cal, shape)] = image
    return full


def calibrate_on_run(
    run: Any,
    cal: TrustCalibration | None,
    alpha: float,
    restore: Callable[[np.ndarray], np.ndarray],
    *,
    progress: bool = False,
) -> tuple[ConformalIntervals, dict[int, np.ndarray]]:
    """Intervals calibrated on a finished run's same-instant reference pairs (in
    pair order, the live schedule); returns them and the frames it restored.
    ``cal`` None: the run's own (:func:`pairscope.trust.calibration_for_run`).

    Raises ValueError, naming why, when the run cannot calibrate them.
    """
    from .._progress import progress as progress_bar

    usable = run.same_instant_pairs()
    if not usable:
        raise ValueError(
            f"{run.path}: no pair has a reference of the same instant (sequential "
            "or alternating pairs), so no interval can be calibrated; acquire "
            "with a triggered or simultaneous mode, or restore without --alpha"
        )
    if cal is None:
        from ._calibrate import calibration_for_run

        cal = calibration_for_run(run)
    intervals = intervals_for(cal, alpha)
    restored: dict[int, np.ndarray] = {}
    bar = progress_bar(
        usable, desc="calibrating intervals", unit="pair", disable=not progress
    )
    for i in bar:
        pair = run[i]
        image = restore(pair.lowdose)
        restored[i] = image
        rest, target = reference_target(cal, image, pair.reference)
        intervals.observe(rest, target, intervals.role(pair.index, pair.metadata))
    if not intervals.ready:
        raise ValueError(
            f"{run.path}: {intervals.calibration_pairs} same-instant reference pairs "
            f"calibrate intervals, alpha {alpha:g} needs {intervals.min_pairs}; "
            "acquire a longer run, raise --alpha, or restore without it"
        )
    return intervals, restored


def registered_noise_factor(warp: Any, shape: tuple[int, int] = (96, 96)) -> float:
    """How much ``warp`` (the reference's registration) scales white noise's
    variance: measured on unit white noise, so any interpolation is covered."""
    noise = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.asarray(warp(noise), np.float64)[8:-8, 8:-8]
    return float(np.var(out))


def _worst_window(missed: np.ndarray, side: int) -> float:
    """The largest fraction of missed pixels in any ``side`` × ``side`` window."""
    side = max(1, min(side, *missed.shape))
    frac = uniform_filter(missed.astype(np.float32), side, mode="constant")
    h = side // 2
    inner = frac[h : frac.shape[0] - h or None, h : frac.shape[1] - h or None]
    return float(inner.max()) if inner.size else float(frac.max())


def _fit_map(r: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Least-squares ``t ≈ a·r + b``."""
    r_mean, t_mean = float(r.mean(dtype=np.float64)), float(t.mean(dtype=np.float64))
    rc = np.asarray(r, np.float64) - r_mean
    var = float(np.mean(rc * rc))
    a = (
        float(np.mean(rc * (np.asarray(t, np.float64) - t_mean))) / var
        if var > 1e-12
        else 1.0
    )
    return a, t_mean - a * r_mean


def _structure(r: np.ndarray, a: float) -> np.ndarray:
    """Local structure: gradient magnitude of the prediction, reference units."""
    plan = gaussian_plan(r.shape, STRUCTURE_SIGMA_PX)  # by FFT: one transform
    spectrum = plan.spectrum(r)
    gy, gx = (plan.apply(spectrum, plan.of_order(o)) for o in ((1, 0), (0, 1)))
    return np.float32(abs(a)) * np.sqrt(gy * gy + gx * gx)


def _edges(mu: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qs = np.linspace(0, 1, STRATA + 1)[1:-1]
    return np.quantile(mu, qs), np.quantile(structure, qs)
