"""The system's point spread function, measured on the references of logged pairs.

Every fluorescence specimen is a sum of point emitters seen through the PSF, so a
model that has seen points rendered through the *measured* PSF has the one prior
that holds for any specimen (``CrappifiedDataset(point_emitters=...)``).  The PSF is
taken as an isotropic Gaussian integrated over each reference pixel; its width is
fitted to isolated, round spots of the reference frames.  Real spots are points or
larger (puncta, vesicles), never smaller, so the PSF is a low quantile of the
spots' widths, not their mean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter
from scipy.optimize import least_squares
from scipy.special import erf

from pairscope.io import Run, open_run

__all__ = [
    "PsfModel",
    "fit_psf",
    "fit_psf_frames",
    "random_points",
    "render_points",
]

logger = logging.getLogger(__name__)

HALF = 5  # fit window half-width, reference pixels
MIN_SPOTS = 8
QUANTILE = 0.05  # of the spots' widths: the diffraction-limited ones


@dataclass(frozen=True, slots=True)
class PsfModel:
    """Gaussian PSF of the reference camera's grid: ``sigma_px`` (reference pixels),
    fitted on ``n_spots`` isolated spots; ``peak_adu``: a bright spot's peak above
    the offset (the 90th percentile of the fitted spots), the scale of rendered
    points."""

    sigma_px: float
    n_spots: int
    peak_adu: float


def fit_psf(
    runs: Sequence[str | Path | Run],
    *,
    offset_adu: float | None = None,
    max_frames: int = 64,
    max_spots: int = 800,
) -> PsfModel:
    """Fit :class:`PsfModel` to isolated spots of the reference frames of ``runs``.

    ``offset_adu``: the reference camera's offset (default: each frame's median,
    which sparse specimens leave at the background).  Raises ``ValueError`` when
    fewer than 8 isolated round spots are found.
    """
    opened = [r if isinstance(r, Run) else open_run(r) for r in runs]
    frames = [
        (run, i)
        for run in opened
        for i in range(len(run))
        if run.records[i].get("reference")
    ]
    if len(frames) > max_frames:  # a spread-out sample (not every n-th: families
        pick = np.random.default_rng(0).choice(len(frames), max_frames, replace=False)
        frames = [frames[k] for k in sorted(pick)]  # may alternate frame by frame)
    refs = (run[i].reference for run, i in frames)
    return fit_psf_frames(
        (r for r in refs if r is not None), offset_adu=offset_adu, max_spots=max_spots
    )


def fit_psf_frames(
    frames: Iterable[np.ndarray],
    *,
    offset_adu: float | None = None,
    max_spots: int = 800,
) -> PsfModel:
    """:func:`fit_psf` on reference frames (ADU) given as arrays.

    Every isolated spot is a candidate and ``max_spots`` of them are fitted, drawn
    at random: the brightest spots of a specimen are mostly its largest objects
    (brightness grows with size), so taking them first widens the PSF."""
    candidates: list[np.ndarray] = []
    for ref in frames:
        img = ref.astype(np.float64)
        img -= np.median(img) if offset_adu is None else offset_adu
        candidates += _isolated_spots(img)
    if len(candidates) > max_spots:
        pick = np.random.default_rng(0).choice(len(candidates), max_spots, False)
        candidates = [candidates[k] for k in pick]
    sigmas: list[float] = []
    peaks: list[float] = []
    for patch in candidates:
        fit = _fit_spot(patch)
        if fit is not None:
            sigmas.append(fit[0])
            peaks.append(fit[1])
    if len(sigmas) < MIN_SPOTS:
        raise ValueError(
            f"found {len(sigmas)} isolated round spots in the references, need "
            f"{MIN_SPOTS} to measure the PSF"
        )
    return PsfModel(
        sigma_px=float(np.quantile(sigmas, QUANTILE)),
        n_spots=len(sigmas),
        peak_adu=float(np.quantile(peaks, 0.9)),
    )


def _isolated_spots(img: np.ndarray) -> list[np.ndarray]:
    """Windows around the local maxima with no rival nearby, brightest first."""
    smooth = uniform_filter(img, 3)
    noise = 1.4826 * float(np.median(np.abs(img - np.median(img)))) + 1e-9
    is_max = (smooth == maximum_filter(smooth, size=2 * HALF + 1)) & (
        smooth > 10 * noise / 3  # the 3x3 mean is ~3x less noisy
    )
    ys, xs = np.nonzero(is_max)
    order = np.argsort(smooth[ys, xs])[::-1]
    h, w = img.shape
    out: list[np.ndarray] = []
    for y, x in zip(ys[order], xs[order], strict=True):
        if not (2 * HALF <= y < h - 2 * HALF and 2 * HALF <= x < w - 2 * HALF):
            continue
        # isolated: nothing above a third of the peak in the ring around the window
        ring = smooth[y - 2 * HALF : y + 2 * HALF + 1, x - 2 * HALF : x + 2 * HALF + 1]
        core = np.zeros_like(ring, bool)
        core[HALF : 3 * HALF + 1, HALF : 3 * HALF + 1] = True
        if ring[~core].max() > smooth[y, x] / 3:
            continue
        out.append(img[y - HALF : y + HALF + 1, x - HALF : x + HALF + 1])
    return out


def _pixel_gaussian(n: int, x0: float, y0: float, sigma: float) -> np.ndarray:
    """A unit-peak-density Gaussian integrated over the pixels of an n x n grid."""
    edges = np.arange(n + 1) - 0.5
    s = sigma * math.sqrt(2)
    gx = np.diff(erf((edges - x0) / s)) / 2
    gy = np.diff(erf((edges - y0) / s)) / 2
    return np.outer(gy, gx) * (2 * math.pi * sigma**2)


def _fit_spot(patch: np.ndarray) -> tuple[float, float] | None:
    """``(sigma, peak)`` of a round Gaussian spot on a flat background, or None."""
    n = patch.shape[0]

    def model(p: np.ndarray) -> np.ndarray:
        a, x0, y0, s, b = p
        return a * _pixel_gaussian(n, x0, y0, s) + b

    c = (n - 1) / 2
    start = np.array([patch.max() - np.median(patch), c, c, 1.2, np.median(patch)])
    lower = [0, c - 2, c - 2, 0.3, -np.inf]
    upper = [np.inf, c + 2, c + 2, HALF / 1.5, np.inf]
    try:
        res = least_squares(
            lambda p: (model(p) - patch).ravel(), start, bounds=(lower, upper)
        )
    except ValueError:
        return None
    a, _, _, s, _ = res.x
    resid = patch - model(res.x)
    if not res.success or a <= 0 or np.std(resid) > 0.15 * a:
        return None  # not a round Gaussian spot (an edge, a filament, a cluster)
    if s <= lower[3] * 1.01 or s >= upper[3] * 0.99:
        return None
    return float(s), float(a * _pixel_gaussian(1, 0, 0, s)[0, 0])


def render_points(
    shape: tuple[int, int],
    xy: np.ndarray,
    peaks: np.ndarray,
    sigma_px: float,
) -> np.ndarray:
    """Point emitters at ``xy`` (``(n, 2)`` x, y in pixels) imaged through a
    pixel-integrated Gaussian PSF; ``peaks`` is each one's centred-pixel value."""
    out = np.zeros(shape, np.float64)
    reach = math.ceil(4 * sigma_px) + 1
    unit = float(_pixel_gaussian(1, 0, 0, sigma_px)[0, 0])
    area = 2 * math.pi * sigma_px**2  # unit peak density -> unit mass
    for (x, y), peak in zip(xy, peaks, strict=True):
        cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
        y0, y1 = max(cy - reach, 0), min(cy + reach + 1, shape[0])
        x0, x1 = max(cx - reach, 0), min(cx + reach + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        edges_x = np.arange(x0, x1 + 1) - 0.5
        edges_y = np.arange(y0, y1 + 1) - 0.5
        s = sigma_px * math.sqrt(2)
        gx = np.diff(erf((edges_x - x) / s)) / 2
        gy = np.diff(erf((edges_y - y) / s)) / 2
        out[y0:y1, x0:x1] += (peak / unit) * area * np.outer(gy, gx)
    return out


def random_points(
    shape: tuple[int, int], psf: PsfModel, rng: np.random.Generator
) -> np.ndarray:
    """A field of point emitters through ``psf``: small clusters (one to three
    points, neighbours 1-6 PSF widths apart, any angle) at about one cluster per
    24 x 24 pixels, each point's peak ``psf.peak_adu`` times a log-normal draw."""
    n_clusters = rng.poisson(shape[0] * shape[1] / 24**2)
    xy = []
    for _ in range(n_clusters):
        first = rng.uniform((0, 0), (shape[1], shape[0]))
        xy.append(first)
        for _ in range(rng.binomial(2, 0.5)):
            d = rng.uniform(1, 6) * psf.sigma_px
            t = rng.uniform(0, 2 * math.pi)
            xy.append(first + d * np.array([math.cos(t), math.sin(t)]))
    points = np.reshape(xy, (-1, 2))
    peaks = psf.peak_adu * rng.lognormal(-0.3, 0.5, len(points))
    return render_points(shape, points, peaks, psf.sigma_px)
