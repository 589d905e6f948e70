"""Invented and lost structure: compact objects at the Rayleigh scale, restored vs reference.

A model can score well on PSNR and still merge two beads into one (lost) or draw a
bead that is not there (invented); per-pixel intervals average such errors away.
The structures here are the compact bright objects at the resolution scale: maxima
of the scale-normalised Laplacian of Gaussian (σ = ``LOG_SIGMA_RAYLEIGH`` Rayleigh
distances) whose Hessian curves down in both directions with a ratio of at least
``ISOTROPY`` (a blob, not a ridge of a filament), above ``THRESHOLD_SD`` standard
deviations of the reference's noise as that filter passes it (per pixel, from the
rig model's Poisson-Gaussian photometry).  Both frames are in reference units (the
restored one through the photometric map), detected alike; two structures match
within ``MATCH_RAYLEIGH`` Rayleigh distances.

For a pair, ``invented`` is the fraction of the restoration's structures the
reference does not show, ``lost`` the fraction of the reference's the restoration
lacks.  Part of each is the reference's own noise, so each is taken over its
**null**, what a restoration that is exactly right would score: for invented, the
restoration against itself plus simulated reference noise (a dim structure lost in
the noise); for lost, the reference against itself plus a second simulated noise (a
reference structure too faint to survive it) — a null built from the reference, not
from the restoration, so a blurry restoration cannot hide its losses in it.  The
simulated noise goes through the registration's warp as the reference did
(:class:`NoiseWarp`).

**Risk control.** With losses in [0, 1], conformal risk control (Angelopoulos et
al., "Conformal risk control", ICLR 2024) bounds the expected risk of the next pair
exchangeable with the ``n`` checked so far by ``(Σ risks + 1) / (n + 1)``; the summary
reports that bound beside the mean.  A pair whose invented excess reaches
``tolerance`` is flagged; an invented mean above it flags the run, and the run's
restorations are *certified* at the tolerance once the invented bound is within it.

**Lost is measured, not flagged.** Part of what a restoration lacks is not in its
low-dose input at all (structure below the binned camera's noise), and that floor is
not yet separated from the model's own losses: on fresh demo seeds the bundled model
and a 2-minute model lose alike (median excess 0.17 and 0.18,
``scripts/bench_trust.py``), so a flag on it would be a verdict on the data, not the
model.  It is reported with its bound; the two-point table of ``pairscope
evaluate`` (pairs resolved against the ideal observer) is where lost resolution is
judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .._fft_filter import GaussianFFT, gaussian_plan
from ..io.calibration import Registration, apply_registration

__all__ = [
    "RISK_TOLERANCE",
    "NoiseWarp",
    "StructureRisks",
    "StructureTally",
    "blobs",
    "detection_threshold",
    "structure_risks",
]

LOG_SIGMA_RAYLEIGH = 0.35
THRESHOLD_SD = 5.0
ISOTROPY = 0.3
MATCH_RAYLEIGH = 0.5
#: a pair whose invented excess reaches this is flagged
RISK_TOLERANCE = 0.25
#: fewer structures than this make no fraction (one of three is not 33 % of a frame)
MIN_STRUCTURES = 8


@dataclass(frozen=True, slots=True)
class StructureRisks:
    """One pair's structure figures: fractions over their nulls (``None`` with
    too few structures to make one), as observed, and the counts."""

    invented: float | None
    lost: float | None
    invented_observed: float
    lost_observed: float
    invented_null: float
    lost_null: float
    restored_structures: int
    reference_structures: int

    def metrics(self) -> dict[str, float | int | None]:
        """The fields ``quality.jsonl`` gets."""
        return {
            "structures_invented": self.invented,
            "structures_lost": self.lost,
            "structures_invented_observed": self.invented_observed,
            "structures_lost_observed": self.lost_observed,
            "structures_restored": self.restored_structures,
            "structures_reference": self.reference_structures,
        }

    def flag(self, tolerance: float = RISK_TOLERANCE) -> str:
        """One line when the invented excess reaches ``tolerance``, else ``""``
        (lost is measured, not flagged: module doc)."""
        if self.invented is None or self.invented < tolerance:
            return ""
        return (
            f"{self.invented:.0%} of {self.restored_structures} restored structures "
            f"the reference does not show (invented), tolerance {tolerance:.0%}"
        )


@cache
def _log_noise_gain(sigma: float) -> float:
    """How the normalised LoG filter scales white noise's standard deviation."""
    g = np.random.default_rng(0).standard_normal((96, 96))
    log = ndi.gaussian_laplace(g, sigma) * sigma * sigma
    return float(np.std(log[12:-12, 12:-12]))


def detection_threshold(noise_var: np.ndarray, rayleigh_px: float) -> np.ndarray:
    """Per pixel, the normalised LoG response a structure must exceed: ``THRESHOLD_SD``
    local noise SDs as the filter passes them (``noise_var``: the noise variance)."""
    s = LOG_SIGMA_RAYLEIGH * rayleigh_px
    var = np.asarray(noise_var, np.float32)
    local_var = np.maximum(gaussian_plan(var.shape, 2 * s)(var), 0.0)
    return np.float32(THRESHOLD_SD * _log_noise_gain(s)) * np.sqrt(local_var)


def blobs(image: np.ndarray, threshold: np.ndarray, rayleigh_px: float) -> np.ndarray:
    """``(n, 2)`` pixel positions (y, x) of the compact structures of ``image``
    (module doc) above ``threshold`` (:func:`detection_threshold` of such an
    image's noise variance, made once for an image and its noisy copy).

    The Laplacian of Gaussian is filtered by FFT (one transform); the Hessian's
    three components are computed at its maxima only."""
    img = np.asarray(image, np.float32)
    s = LOG_SIGMA_RAYLEIGH * rayleigh_px
    plan = gaussian_plan(img.shape, s)
    log = plan.apply(plan.spectrum(img), plan.laplacian())
    log *= np.float32(-s * s)
    ys, xs = _local_maxima(log, threshold, max(3, round(0.8 * rayleigh_px) | 1))
    # a blob curves down in both directions, the flatter at least ISOTROPY as steeply
    h_yy, h_xx, h_xy = _hessian_at(img, plan, ys, xs)
    half_trace = (h_xx + h_yy) / 2
    det = h_xx * h_yy - h_xy**2
    spread = np.sqrt(np.maximum(half_trace**2 - det, 0.0))
    steep, flat = half_trace - spread, half_trace + spread  # steep <= flat
    blob = (flat < 0) & (flat / np.minimum(steep, -1e-12) > ISOTROPY)
    return np.stack([ys[blob], xs[blob]], axis=1)


def _local_maxima(
    values: np.ndarray, threshold: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero((values == maximum_filter(values, size)) & (values >
    threshold))``, looking only around the pixels above the threshold (a few
    percent of a frame; the full maximum filter was a third of the detection)."""
    ys, xs = np.nonzero(values > threshold)
    r = size // 2
    padded = np.pad(values, r, mode="symmetric")  # maximum_filter's "reflect"
    v = values[ys, xs]
    keep = np.ones(v.shape, bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy or dx:
                keep &= v >= padded[ys + r + dy, xs + r + dx]
    return ys[keep], xs[keep]


def _hessian_at(
    img: np.ndarray, plan: GaussianFFT, ys: np.ndarray, xs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gaussian_filter(img, sigma, order)`` for the orders (2, 0), (0, 2) and
    (1, 1), at the pixels ``(ys, xs)`` only (reflect mode, float64)."""
    r = plan.radius
    padded = np.pad(np.asarray(img, np.float64), r, mode="symmetric")
    steps = np.arange(2 * r + 1)
    patches = padded[
        ys[:, None, None] + steps[None, :, None],
        xs[:, None, None] + steps[None, None, :],
    ]
    # correlation weights: each kernel reversed (odd orders change sign)
    k0, k1, k2 = (plan.kernel(order)[::-1] for order in (0, 1, 2))
    return (
        np.einsum("nij,i,j->n", patches, k2, k0),
        np.einsum("nij,i,j->n", patches, k0, k2),
        np.einsum("nij,i,j->n", patches, k1, k1),
    )


def _unmatched(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """The fraction of ``a``'s positions with none of ``b``'s within ``radius``."""
    if len(a) == 0:
        return 0.0
    if len(b) == 0:
        return 1.0
    d, _ = cKDTree(b).query(a, distance_upper_bound=radius)
    return float(np.mean(~np.isfinite(d)))


class NoiseWarp:
    """Simulated noise as the registered reference has it: white noise through the
    registration, unit variance (the noise model is the registered reference's).

    How much a shift smooths white noise is the same everywhere: the sum of squares
    of its response to one pixel, found once; a warp that also scales smooths
    differently across the frame, so its gain is measured on each frame.  Noise
    frames come from a bank of ``BANK`` warped frames per shape, made once, each
    draw one of them moved by a random offset (warping a fresh frame twice per
    pair was a quarter of the check's cost); the pairs' nulls then share noise
    frames, never where a structure sits relative to them."""

    BANK = 4

    def __init__(
        self, warp: Callable[[np.ndarray], np.ndarray], *, shift_only: bool
    ) -> None:
        self.warp = warp
        self.gain: float | None = _white_noise_gain(warp) if shift_only else None
        self._bank: dict[tuple[int, ...], list[np.ndarray]] = {}

    @classmethod
    def for_registration(cls, reg: Registration) -> NoiseWarp:
        """The noise warp of ``reg`` (:func:`~pairscope.io.calibration.apply_registration`)."""
        return cls(partial(apply_registration, reg=reg), shift_only=reg.scale == 1)

    def __call__(self, noise: np.ndarray) -> np.ndarray:
        """``noise`` (white, unit variance) as registered."""
        warped = np.asarray(self.warp(noise), np.float32)
        gain = self.gain
        if gain is None:
            gain = float(np.std(noise) / max(float(np.std(warped)), 1e-12))
        return warped * np.float32(gain)

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """A registered unit noise frame of ``shape`` (from the bank)."""
        bank = self._bank.get(shape)
        if bank is None:
            seeds = np.random.default_rng(len(self._bank))
            bank = [
                self(seeds.standard_normal(shape, np.float32)) for _ in range(self.BANK)
            ]
            self._bank[shape] = bank
        frame = bank[int(rng.integers(len(bank)))]
        offset = tuple(int(rng.integers(n)) for n in shape)
        return np.roll(frame, offset, axis=tuple(range(len(shape))))


def _white_noise_gain(warp: Callable[[np.ndarray], np.ndarray]) -> float:
    """1 / the standard deviation ``warp`` leaves of unit white noise."""
    n = 33
    impulse = np.zeros((n, n), np.float32)
    impulse[n // 2, n // 2] = 1.0
    response = np.asarray(warp(impulse), np.float64)
    return float(1.0 / np.sqrt(np.sum(response**2)))


def structure_risks(
    restored: np.ndarray,
    target: np.ndarray,
    noise_var: Callable[[np.ndarray], np.ndarray],
    rayleigh_px: float,
    *,
    noise_warp: NoiseWarp | None = None,
    seed: int = 0,
) -> StructureRisks:
    """One pair's invented and lost structure (module doc).

    ``restored`` (in reference units) and ``target`` (the registered reference)
    share one grid; ``noise_var`` maps an expectation (reference ADU) to the
    reference's noise variance there, as registered; ``noise_warp`` is what the
    registration does to noise (a :class:`NoiseWarp`; ``None``: white noise)."""
    rest = np.asarray(restored, np.float32)
    ref = np.asarray(target, np.float32)
    rng = np.random.default_rng(seed)

    def simulated(sd: np.ndarray) -> np.ndarray:
        if noise_warp is None:
            return rng.standard_normal(sd.shape, np.float32) * sd
        return noise_warp.draw(sd.shape, rng) * sd

    var_rest = np.asarray(noise_var(rest), np.float32)
    var_ref = np.asarray(noise_var(ref), np.float32)
    thr_rest = detection_threshold(var_rest, rayleigh_px)
    thr_ref = detection_threshold(var_ref, rayleigh_px)
    radius = MATCH_RAYLEIGH * rayleigh_px
    mine = blobs(rest, thr_rest, rayleigh_px)
    theirs = blobs(ref, thr_ref, rayleigh_px)
    invented = _unmatched(mine, theirs, radius)
    lost = _unmatched(theirs, mine, radius)
    noisy_rest = rest + simulated(np.sqrt(var_rest))
    noisy_ref = ref + simulated(np.sqrt(var_ref))
    invented_null = _unmatched(mine, blobs(noisy_rest, thr_rest, rayleigh_px), radius)
    lost_null = _unmatched(theirs, blobs(noisy_ref, thr_ref, rayleigh_px), radius)
    enough_mine, enough_theirs = (
        len(mine) >= MIN_STRUCTURES,
        len(theirs) >= MIN_STRUCTURES,
    )
    return StructureRisks(
        invented=max(0.0, invented - invented_null) if enough_mine else None,
        lost=max(0.0, lost - lost_null) if enough_theirs else None,
        invented_observed=invented,
        lost_observed=lost,
        invented_null=invented_null,
        lost_null=lost_null,
        restored_structures=len(mine),
        reference_structures=len(theirs),
    )


class StructureTally:
    """The run's structure risks: means, conformal risk-control bounds, flags."""

    def __init__(self, tolerance: float = RISK_TOLERANCE) -> None:
        self.tolerance = tolerance
        self.invented: list[float] = []
        self.lost: list[float] = []
        self.flagged = 0
        self.pairs = 0

    def add(self, risks: StructureRisks) -> None:
        self.pairs += 1
        if risks.invented is not None:
            self.invented.append(risks.invented)
        if risks.lost is not None:
            self.lost.append(risks.lost)
        self.flagged += bool(risks.flag(self.tolerance))

    @staticmethod
    def bound(risks: list[float]) -> float | None:
        """Conformal risk control's bound on the next pair's expected risk (losses
        in [0, 1]): ``(Σ risks + 1) / (n + 1)``; ``None`` without pairs."""
        if not risks:
            return None
        return (float(np.sum(risks)) + 1.0) / (len(risks) + 1)

    def summary(self) -> dict[str, object]:
        """``quality_summary.json``'s ``structures``: ``flagged`` is ``["invented"]``
        when its mean exceeds the tolerance; ``certified`` says whether its bound
        is within it (few pairs leave the bound above it: not yet certified).  Lost
        is reported with its bound, not flagged (module doc)."""
        inv_mean = float(np.mean(self.invented)) if self.invented else None
        lost_mean = float(np.mean(self.lost)) if self.lost else None
        bounds = (self.bound(self.invented), self.bound(self.lost))
        return {
            "tolerance": self.tolerance,
            "pairs": self.pairs,
            "flagged_pairs": self.flagged,
            "invented_mean": inv_mean,
            "invented_bound": bounds[0],
            "lost_mean": lost_mean,
            "lost_bound": bounds[1],
            "flagged": ["invented"]
            if inv_mean is not None and inv_mean > self.tolerance
            else [],
            "certified": bounds[0] is not None and bounds[0] <= self.tolerance,
        }
