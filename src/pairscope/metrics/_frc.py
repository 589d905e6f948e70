"""Fourier ring correlation (FRC) between two independent images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import gaussian_filter1d
from scipy.signal.windows import hann

__all__ = ["FRCCurve", "frc_curve", "frc_resolution"]


@dataclass(frozen=True)
class FRCCurve:
    """Fourier ring correlation as a function of spatial frequency.

    Attributes
    ----------
    frequencies_per_um : ndarray
        Ring centre frequencies in cycles/µm, from 0 up to Nyquist.
    correlation : ndarray
        Normalised cross-correlation per ring, in [-1, 1].
    n_pixels_per_ring : ndarray
        Number of Fourier pixels in each ring.
    """

    frequencies_per_um: NDArray[np.float64]
    correlation: NDArray[np.float64]
    n_pixels_per_ring: NDArray[np.int64]


def _crop_square(x: NDArray[np.float64]) -> NDArray[np.float64]:
    n = min(x.shape)
    r0, c0 = (x.shape[0] - n) // 2, (x.shape[1] - n) // 2
    return x[r0 : r0 + n, c0 : c0 + n]


def frc_curve(
    img_a: ArrayLike,
    img_b: ArrayLike,
    *,
    pixel_size_um: float = 1.0,
    n_bins: int | None = None,
    apodize: bool = True,
) -> FRCCurve:
    """Fourier ring correlation of two images of the same field.

    The images must carry independent noise (e.g. two references of the same
    instant, or a restoration and an independent reference). Non-square
    frames are centre-cropped to square; each image has its mean removed and,
    with ``apodize``, is multiplied by a separable 2-D Hann window to suppress
    the cross-shaped edge artefact of the periodic FFT. The window's main lobe
    smears a sharp spectral cutoff over about two rings, so with very high
    SNR the curve crosses the threshold a few rings beyond the cutoff.

    Parameters
    ----------
    img_a, img_b : array_like
        2-D images of the same shape.
    pixel_size_um : float
        Pixel size in µm; sets the frequency axis.
    n_bins : int, optional
        Number of rings between 0 and Nyquist; default ``N // 2`` (one
        Fourier pixel wide).
    apodize : bool
        Apply the Hann window.

    Returns
    -------
    FRCCurve
    """
    a = np.asarray(img_a, dtype=np.float64)
    b = np.asarray(img_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"need two 2-D images of equal shape, got {a.shape}, {b.shape}"
        )
    a, b = _crop_square(a), _crop_square(b)
    n = a.shape[0]
    a, b = a - a.mean(), b - b.mean()
    if apodize:
        w1 = hann(n, sym=False)
        w = np.outer(w1, w1)
        a, b = a * w, b * w
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    k = np.fft.fftfreq(n) * n  # integer frequency index
    radius = np.hypot(k[:, None], k[None, :]).ravel()
    n_bins = n // 2 if n_bins is None else int(n_bins)
    edges = np.linspace(0.0, n / 2, n_bins + 1)
    idx = np.digitize(radius, edges) - 1
    keep = (idx >= 0) & (idx < n_bins)
    idx = idx[keep]

    def ring_sum(v: NDArray[np.float64]) -> NDArray[np.float64]:
        # with weights, bincount sums in float64 (numpy's stubs say intp)
        return cast(
            NDArray[np.float64],
            np.bincount(idx, weights=v.ravel()[keep], minlength=n_bins),
        )

    cross = ring_sum(np.real(fa * np.conj(fb)))
    pa = ring_sum(np.abs(fa) ** 2)
    pb = ring_sum(np.abs(fb) ** 2)
    denom = np.sqrt(pa * pb)
    corr = np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return FRCCurve(
        frequencies_per_um=centres / (n * pixel_size_um),
        correlation=corr,
        n_pixels_per_ring=np.bincount(idx, minlength=n_bins).astype(np.int64),
    )


def frc_resolution(
    curve: FRCCurve, threshold: float = 1 / 7, *, smooth_sigma: float = 1.0
) -> float:
    """Resolution in µm where the FRC first falls below ``threshold``.

    The DC ring is ignored, the rest of the curve is smoothed with a Gaussian
    of ``smooth_sigma`` bins, the first downward crossing is located with
    linear interpolation between bins, and its inverse frequency is returned.

    Parameters
    ----------
    curve : FRCCurve
        Output of :func:`frc_curve`.
    threshold : float
        Fixed threshold; 1/7 is the common choice for two independent halves.
    smooth_sigma : float
        Smoothing in bins; 0 disables it.

    Returns
    -------
    float
        Resolution in µm. ``inf`` if the curve never rises above the
        threshold (nothing correlated); ``1 / f_max`` (Nyquist-limited) if it
        never falls below it.
    """
    f = curve.frequencies_per_um[1:]  # ring 0 is the DC pixel alone: skip it
    c = curve.correlation[1:]
    if smooth_sigma > 0:
        c = gaussian_filter1d(c, smooth_sigma, mode="nearest")
    below = np.flatnonzero(c < threshold)
    if below.size == 0:
        return float(1.0 / f[-1])
    i = int(below[0])
    if i == 0:
        return float("inf")
    t = (c[i - 1] - threshold) / (c[i - 1] - c[i])
    f_cross = f[i - 1] + t * (f[i] - f[i - 1])
    return float(1.0 / f_cross)
