"""Data consistency: re-degrade a restoration and compare with its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import gaussian_filter

from .._binning import bin_sum
from ._intensity import affine_fit, percentile_normalize

__all__ = ["ConsistencyResult", "bin_image", "consistency_residual", "reblur_and_bin"]


@dataclass(frozen=True)
class ConsistencyResult:
    """Residual between the re-degraded restoration and the low-dose input.

    Attributes
    ----------
    residual : ndarray
        ``fit(reblur_and_bin(restored)) - normalised lowdose`` on the low-dose
        grid, in units of the low-dose 0.1-99.9 % percentile range. Positive
        values mark intensity the restoration has and the data do not.
    rms : float
        Root mean square of ``residual``.
    """

    residual: NDArray[np.float64]
    rms: float


def bin_image(
    img: ArrayLike, factor: int, reduce: Literal["sum", "mean"] = "sum"
) -> NDArray[np.float64]:
    """Bin the last two axes by ``factor`` (cropping any remainder).

    Parameters
    ----------
    img : array_like
        Image or stack ``(..., H, W)``.
    factor : int
        Integer binning factor.
    reduce : {"sum", "mean"}
        ``"sum"`` models on-chip charge binning.

    Returns
    -------
    ndarray of float64
        Shape ``(..., H // factor, W // factor)``.
    """
    summed = bin_sum(np.asarray(img, dtype=np.float64), factor)
    return summed if reduce == "sum" else summed / factor**2


def reblur_and_bin(
    fine_img: ArrayLike,
    factor: int,
    psf_sigma_px: float | None = None,
    reduce: Literal["sum", "mean"] = "sum",
) -> NDArray[np.float64]:
    """Forward model from the reference grid to the low-dose grid.

    Parameters
    ----------
    fine_img : array_like
        Image on the reference grid ``(..., H, W)``.
    factor : int
        Binning factor.
    psf_sigma_px : float, optional
        Extra Gaussian blur (fine pixels) applied before binning, for a
        low-dose path blurrier than the reference; ``None`` for none.
    reduce : {"sum", "mean"}
        Binning reduction.

    Returns
    -------
    ndarray of float64
    """
    x = np.asarray(fine_img, dtype=np.float64)
    if psf_sigma_px:
        sig = (0,) * (x.ndim - 2) + (psf_sigma_px, psf_sigma_px)
        x = gaussian_filter(x, sig, mode="reflect")
    return bin_image(x, factor, reduce)


def consistency_residual(
    restored: ArrayLike,
    lowdose: ArrayLike,
    factor: int,
    *,
    psf_sigma_px: float | None = None,
) -> ConsistencyResult:
    """Re-degrade ``restored`` and compare it with ``lowdose``.

    The low-dose frame is percentile-normalised, the re-degraded restoration
    is affine-fitted to it (so gain and offset do not count), and the
    difference is returned. Noise in the low-dose frame sets the floor of the
    RMS; localised large residuals mark structure the network invented or
    removed.

    Parameters
    ----------
    restored : array_like
        Restoration on the reference grid, shape ``(factor*H, factor*W)``.
    lowdose : array_like
        Network input, shape ``(H, W)``.
    factor : int
        Binning factor.
    psf_sigma_px : float, optional
        Passed to :func:`reblur_and_bin`.

    Returns
    -------
    ConsistencyResult
    """
    low = np.asarray(lowdose, dtype=np.float64)
    degraded = reblur_and_bin(restored, factor, psf_sigma_px)
    if degraded.shape != low.shape:
        raise ValueError(
            f"re-degraded restoration has shape {degraded.shape}, "
            f"low-dose frame {low.shape}"
        )
    low_n = percentile_normalize(low)
    residual = affine_fit(degraded, low_n) - low_n
    return ConsistencyResult(residual, float(np.sqrt(np.mean(residual**2))))
