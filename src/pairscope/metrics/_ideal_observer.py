"""The ideal observer's two-point bound for one run: pair or single rod?

A restoration is a function of the low-dose frame, so its dip is a decision made
from that frame, and no decision beats the ideal observer.  For each point pair of a
run this module renders, on the low-dose camera's own (binned) pixels, the pair's
expected image and that of the straight rod along the same axis that looks most like
it (length scanned, brightness fitted), both through the rig model's PSF.  The
pair's brightness and the background come from the run's low-dose frames (fitted in
electrons with the rig model's photometry); the noise is Poisson plus the camera's
read noise.  ``d'`` is the noise-weighted distance between the two expected images;
by the Neyman-Pearson lemma no rule that splits at most ``false_split`` of such rods
resolves more than ``Phi(d' - z(1 - false_split))`` of the pairs.  The rod is one
alternative: richer single objects only come closer, so the bound is an upper bound.
``scripts/two_point_limit.py`` computes the same on the held-out forward model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from ..rig import Photometry, RigModel, splat_bilinear

__all__ = ["IdealObserver", "d_prime", "ideal_observer_for_rig", "ideal_resolvable"]

OVERSAMPLE = 4  # fine samples per unbinned pixel
ROD_LENGTHS = np.linspace(0.0, 2.5, 26)  # in units of the pair's separation
FALSE_SPLIT = 0.05
#: ``(shape, pixel_um) -> OTF`` on the ``rfft2`` grid, ``None`` while unknown
OTF = Callable[[tuple[int, int], float], "np.ndarray | None"]


@dataclass
class _Target:
    """One pair's geometry and the brightness and background fitted per frame."""

    sep_um: float
    origin: tuple[int, int]  # low-dose pixel (row, column) of the patch corner
    points_fine: np.ndarray  # (2, 2) point positions (x, y) on the fine patch grid
    template: np.ndarray  # expected electrons of the pair at unit brightness each
    fits: list[tuple[float, float]] = field(default_factory=list)  # (a, bg) e-


class IdealObserver:
    """Accumulates a run's pairs (:meth:`add`, once per frame and pair); the
    fraction of pairs per separation the ideal observer resolves at no more than
    ``false_split`` rods split is :func:`ideal_resolvable`'s.

    Parameters
    ----------
    factor
        Binning of the low-dose camera relative to the target grid.
    pixel_um
        Sample-plane size of one target-grid (unbinned) pixel.
    otf
        ``(shape, pixel_um) -> OTF`` on the ``rfft2`` grid (the rig model's).
    photometry
        The low-dose camera's (known: e⁻/ADU and offset).
    rayleigh_um
        Sets the patch size.
    """

    def __init__(
        self,
        factor: int,
        pixel_um: float,
        otf: OTF,
        photometry: Photometry,
        rayleigh_um: float,
    ) -> None:
        assert photometry.e_per_adu is not None and photometry.offset_adu is not None
        self.factor = int(factor)
        self.pixel_um = float(pixel_um)
        self._otf = otf
        self.e_per_adu = float(photometry.e_per_adu)
        self.offset_adu = float(photometry.offset_adu)
        self.read_noise_e = float(photometry.read_noise_e or 0.0)
        self.rayleigh_um = float(rayleigh_um)
        self._targets: dict[tuple[float, ...], _Target] = {}
        self._otfs: dict[int, np.ndarray] = {}

    def _patch_px(self, sep_um: float) -> int:
        """Low-dose pixels per patch side: the longest rod and 2 Rayleigh each side."""
        span = 2.5 * sep_um + 4.0 * self.rayleigh_um
        return max(6, math.ceil(span / (self.factor * self.pixel_um)))

    def _render(self, points: np.ndarray, weights: np.ndarray, m: int) -> np.ndarray:
        """Expected photons per low-dose pixel of an ``m``-pixel patch: fine points
        splatted bilinearly, blurred, summed into pixels (a 2-pixel margin keeps
        the FFT's wrap-around out)."""
        step = self.factor * OVERSAMPLE
        pad = 2 * step
        n = m * step + 2 * pad
        grid = splat_bilinear((n, n), points + pad, weights)
        if n not in self._otfs:
            otf = self._otf((n, n), self.pixel_um / OVERSAMPLE)
            if otf is None:
                raise ValueError("the ideal observer needs the PSF (NA, wavelength)")
            self._otfs[n] = otf
        img = np.fft.irfft2(np.fft.rfft2(grid) * self._otfs[n], s=grid.shape)
        img = np.maximum(img, 0.0)[pad:-pad, pad:-pad]
        return img.reshape(m, step, m, step).sum((1, 3))

    def add(
        self,
        lowdose: np.ndarray,
        p1: tuple[float, float],
        p2: tuple[float, float],
        sep_um: float,
    ) -> None:
        """One pair in one low-dose frame (ADU, binned): its points on the target
        grid (unbinned low-dose pixels, x = column)."""
        f = self.factor
        key = (*(round(v, 1) for v in (*p1, *p2)), round(sep_um, 5))
        target = self._targets.get(key)
        if target is None:
            m = self._patch_px(sep_um)
            mid = 0.5 * (np.asarray(p1) + np.asarray(p2))  # (x, y) unbinned
            centre = np.floor((mid + 0.5) / f).astype(int)  # low-dose pixel (x, y)
            origin = (int(centre[1]) - m // 2, int(centre[0]) - m // 2)
            h, w = lowdose.shape[-2:]
            if origin[0] < 0 or origin[1] < 0 or origin[0] + m > h or origin[1] + m > w:
                return  # too close to the edge for a patch: not counted
            corner = np.array([origin[1], origin[0]]) * f  # unbinned (x, y)
            pts = (np.array([p1, p2], float) - corner + 0.5) * OVERSAMPLE - 0.5
            template = self._render(pts, np.ones(2), m)
            target = _Target(float(sep_um), origin, pts, template)
            self._targets[key] = target
        m = target.template.shape[0]
        r0, c0 = target.origin
        patch = np.asarray(lowdose, np.float64)[..., r0 : r0 + m, c0 : c0 + m]
        electrons = (patch.reshape(m, m) - self.offset_adu) * self.e_per_adu
        design = np.column_stack([target.template.ravel(), np.ones(m * m)])
        (a, bg), *_ = np.linalg.lstsq(design, electrons.ravel(), rcond=None)
        target.fits.append((float(a), float(bg)))

    def detectability(self, target: _Target) -> tuple[float, float]:
        """``(d', closest rod length / separation)`` for one pair, from its median
        fitted brightness and background."""
        a, bg = (float(v) for v in np.median(np.array(target.fits), axis=0))
        if a <= 0:
            return 0.0, 0.0
        m = target.template.shape[0]
        pair = a * target.template
        var = pair + max(bg, 0.0) + self.read_noise_e**2
        p1, p2 = target.points_fine
        sep_fine = float(np.hypot(*(p2 - p1)))
        direction = (p2 - p1) / sep_fine
        mid = 0.5 * (p1 + p2)
        best = (math.inf, 0.0)
        for ratio in ROD_LENGTHS:
            length = ratio * sep_fine
            k = max(int(np.ceil(length * 4)), 1)  # quarter fine-pixel steps
            t = (np.arange(k) + 0.5) / k - 0.5
            rod = self._render(
                mid + np.outer(t * length, direction), np.full(k, 2 / k), m
            )
            d = d_prime(pair, rod, var)
            if d < best[0]:
                best = (d, float(ratio))
        return best

    def per_pair(self) -> list[tuple[float, float, float, float]]:
        """``(separation_um, d', closest rod length / separation, electrons per
        bead)`` per pair seen."""
        return [
            (
                round(t.sep_um, 4),
                *self.detectability(t),
                float(np.median([a for a, _ in t.fits])),
            )
            for t in self._targets.values()
            if t.fits
        ]


def d_prime(pair: np.ndarray, rod: np.ndarray, variance: np.ndarray) -> float:
    """Detectability of a pair against a rod: the noise-weighted distance between
    their expected images (background removed, same units as ``variance``'s
    square root), the rod's brightness fitted by weighted least squares."""
    weight = 1.0 / np.maximum(variance, 1e-9)
    scale = float((weight * rod * pair).sum() / max((weight * rod * rod).sum(), 1e-30))
    return float(np.sqrt((weight * (pair - scale * rod) ** 2).sum()))


def ideal_resolvable(
    observers: Sequence[IdealObserver], false_split: float = FALSE_SPLIT
) -> dict[float, dict[str, float]]:
    """Per separation (µm, rounded as the table's), over the pairs of all
    ``observers`` (one per run): the fraction the ideal observer resolves at
    ``false_split`` rods split, the median ``d'``, the closest rod's length over
    the separation, the electrons per bead (median of the fits) and the pairs
    counted."""
    per_sep: dict[float, list[tuple[float, float, float]]] = defaultdict(list)
    for obs in observers:
        for sep, d, ratio, bead in obs.per_pair():
            per_sep[sep].append((d, ratio, bead))
    z = float(norm.ppf(1.0 - false_split))
    out: dict[float, dict[str, float]] = {}
    for sep, values in sorted(per_sep.items()):
        dp = np.array([v[0] for v in values])
        out[sep] = {
            "resolvable": float(np.mean(norm.cdf(dp - z))),
            "d_prime_median": float(np.median(dp)),
            "closest_rod_over_separation": float(np.median([v[1] for v in values])),
            "bead_electrons_median": float(np.median([v[2] for v in values])),
            "pairs": len(values),
        }
    return out


def ideal_observer_for_rig(
    rig: RigModel, factor: int
) -> tuple[IdealObserver | None, str | None]:
    """The run's ideal observer, or ``None`` and the one line that says what the rig
    model lacks for it (the low-dose camera's photometry, its pixel size, the
    objective's NA or the emission wavelength) and where to declare it."""
    low = rig.lowdose
    pixel = low.unbinned_pixel_size_um
    lacking = []
    if not low.photometry.known or low.photometry.offset_adu is None:
        lacking.append(
            "the low-dose camera's photometry (declare 'photometry' in the rig file "
            "or run 'pairscope calibrate-camera')"
        )
    if pixel is None:
        lacking.append("its pixel size (a pixel-size configuration)")
    if rig.optics.rayleigh_um is None:
        lacking.append(
            "the objective's NA and emission wavelength ('optics' in the rig file)"
        )
    if lacking:
        return None, "the ideal observer's bound needs " + "; ".join(lacking)
    assert pixel is not None and rig.optics.rayleigh_um is not None
    return (
        IdealObserver(
            factor, pixel, rig.optics.otf, low.photometry, rig.optics.rayleigh_um
        ),
        None,
    )
