"""Intensity normalisation, PSNR and SSIM.

The scale-invariant variants follow PSSR (Fang et al. 2021) and CAREamics: the
target is percentile-normalised and the prediction is mapped onto it with a
least-squares affine fit before the metric is computed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import gaussian_filter

__all__ = ["TargetScores", "affine_fit", "percentile_normalize", "psnr", "ssim"]

_EPS = 1e-12


def percentile_normalize(
    img: ArrayLike, p_low: float = 0.1, p_high: float = 99.9
) -> NDArray[np.float64]:
    """Map the ``p_low`` and ``p_high`` percentiles of ``img`` to 0 and 1.

    Parameters
    ----------
    img : array_like
        Image of any shape.
    p_low, p_high : float
        Percentiles (0-100) mapped to 0 and 1. Values outside are not clipped.

    Returns
    -------
    ndarray of float64
        ``(img - lo) / (hi - lo)``; a constant image maps to zeros.
    """
    x = np.asarray(img, dtype=np.float64)
    lo, hi = np.percentile(x, [p_low, p_high])
    return (x - lo) / max(hi - lo, _EPS)


def affine_fit(prediction: ArrayLike, target: ArrayLike) -> NDArray[np.float64]:
    """Return ``a * prediction + b`` with ``a, b`` minimising the squared error.

    Parameters
    ----------
    prediction, target : array_like
        Arrays of the same shape.

    Returns
    -------
    ndarray of float64
        The affinely fitted prediction. A constant prediction yields the
        target's mean everywhere.
    """
    p = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: {p.shape} vs {t.shape}")
    pc = p - p.mean()
    var = float(np.mean(pc * pc))
    a = float(np.mean(pc * (t - t.mean()))) / var if var > _EPS else 0.0
    return a * pc + t.mean()


def _data_range(t: NDArray[np.float64], data_range: float | None) -> float:
    if data_range is None:
        data_range = float(t.max() - t.min())
    if data_range <= 0:
        raise ValueError("data_range must be positive (is the target constant?)")
    return float(data_range)


class TargetScores:
    """PSNR and SSIM of several predictions against one ``target``.

    The target's normalisation (``scale_invariant``: as in :func:`psnr`), data
    range and SSIM statistics are computed once (the live trust monitor scores
    the model and bicubic against each reference); :func:`psnr` and :func:`ssim`
    are this class for one prediction.
    """

    TRUNCATE = 3.5

    def __init__(
        self,
        target: ArrayLike,
        *,
        data_range: float | None = None,
        scale_invariant: bool = False,
        win_sigma: float = 1.5,
    ) -> None:
        t = np.asarray(target, dtype=np.float64)
        self.scale_invariant = scale_invariant
        self.target = percentile_normalize(t) if scale_invariant else t
        self.data_range = _data_range(self.target, data_range)
        self.win_sigma = win_sigma
        self._ssim_stats: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None

    def _fitted(self, pred: ArrayLike) -> NDArray[np.float64]:
        p = np.asarray(pred, dtype=np.float64)
        if p.shape != self.target.shape:
            raise ValueError(f"shape mismatch: {p.shape} vs {self.target.shape}")
        return affine_fit(p, self.target) if self.scale_invariant else p

    def _blur(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        # float32: the window sums lose nothing SSIM's fourth decimal shows
        return gaussian_filter(
            x, self.win_sigma, mode="reflect", truncate=self.TRUNCATE
        )

    def psnr(self, pred: ArrayLike) -> float:
        """:func:`psnr` of ``pred``."""
        p, dr = self._fitted(pred), self.data_range
        mse = float(np.mean((p - self.target) ** 2))
        if mse == 0.0:
            return float("inf")
        return float(10.0 * np.log10(dr * dr / mse))

    def ssim(self, pred: ArrayLike) -> float:
        """:func:`ssim` of ``pred``."""
        blur = self._blur
        p = self._fitted(pred).astype(np.float32)
        t = self.target.astype(np.float32)
        c1, c2 = (0.01 * self.data_range) ** 2, (0.03 * self.data_range) ** 2
        if self._ssim_stats is None:
            mu = blur(t)
            self._ssim_stats = (mu, blur(t * t) - mu * mu)
        mu_t, var_t = self._ssim_stats
        mu_p = blur(p)
        var_p = blur(p * p) - mu_p * mu_p
        cov = blur(p * t) - mu_p * mu_t
        num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
        den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
        smap = num / den
        pad = int(self.TRUNCATE * self.win_sigma + 0.5)
        if all(n > 2 * pad for n in smap.shape):
            smap = smap[tuple(slice(pad, n - pad) for n in smap.shape)]
        return float(smap.mean(dtype=np.float64))


def psnr(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    data_range: float | None = None,
    scale_invariant: bool = False,
) -> float:
    """Peak signal-to-noise ratio in dB.

    Parameters
    ----------
    pred, target : array_like
        Prediction and ground truth of the same shape.
    data_range : float, optional
        Peak value range; defaults to ``target.max() - target.min()`` (after
        normalisation when ``scale_invariant``).
    scale_invariant : bool
        Percentile-normalise the target (0.1/99.9 %) and affine-fit the
        prediction to it first (PSSR/CAREamics convention).

    Returns
    -------
    float
        ``10 log10(data_range**2 / MSE)``; ``inf`` for a perfect match.
    """
    _check_shapes(pred, target)
    return TargetScores(
        target, data_range=data_range, scale_invariant=scale_invariant
    ).psnr(pred)


def ssim(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    data_range: float | None = None,
    scale_invariant: bool = False,
    win_sigma: float = 1.5,
) -> float:
    """Mean structural similarity with a Gaussian window (Wang et al. 2004).

    Uses ``K1 = 0.01``, ``K2 = 0.03``, a Gaussian window of standard deviation
    ``win_sigma`` truncated at 3.5 sigma (11 px for 1.5, as scikit-image with
    ``gaussian_weights=True``), population (not sample) covariances, and
    averages the SSIM map after cropping the window half-width at the borders.

    Parameters
    ----------
    pred, target : array_like
        Prediction and ground truth of the same shape (any dimensionality).
    data_range : float, optional
        Dynamic range; defaults to ``target.max() - target.min()``.
    scale_invariant : bool
        As in :func:`psnr`.
    win_sigma : float
        Standard deviation of the Gaussian window in pixels.

    Returns
    -------
    float
        Mean SSIM; exactly 1.0 for identical inputs.
    """
    _check_shapes(pred, target)
    return TargetScores(
        target,
        data_range=data_range,
        scale_invariant=scale_invariant,
        win_sigma=win_sigma,
    ).ssim(pred)


def _check_shapes(pred: ArrayLike, target: ArrayLike) -> None:
    ps, ts = np.shape(pred), np.shape(target)
    if ps != ts:
        raise ValueError(f"shape mismatch: {ps} vs {ts}")
