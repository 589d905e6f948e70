"""Interpolation baselines from the low-dose grid to the reference grid."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import zoom

from .._spline import upsample_cubic

__all__ = ["UpsampleMethod", "upsample"]

UpsampleMethod = Literal["nearest", "bilinear", "bicubic"]
_ORDER = {"nearest": 0, "bilinear": 1, "bicubic": 3}


def upsample(
    lowdose: ArrayLike, factor: int, method: UpsampleMethod = "bicubic"
) -> NDArray[np.float64]:
    """Upsample the last two axes by an integer ``factor`` onto the reference grid.

    The grid is aligned like camera binning: coarse pixel ``i`` covers fine
    pixels ``factor*i ... factor*i + factor - 1``, so its centre sits at fine
    coordinate ``factor*i + (factor - 1)/2`` (``scipy.ndimage.zoom`` with
    ``grid_mode=True``). ``"nearest"`` replicates each pixel into a
    ``factor x factor`` block; ``"bilinear"`` is order-1 interpolation;
    ``"bicubic"`` is cubic B-spline *interpolation* (order 3 with
    prefiltering, passes through the samples; not the Keys kernel). Borders
    use half-sample symmetric reflection.

    Parameters
    ----------
    lowdose : array_like
        Image or stack ``(..., H, W)``.
    factor : int
        Integer binning factor.
    method : {"nearest", "bilinear", "bicubic"}
        Interpolation method.

    Returns
    -------
    ndarray of float64
        Shape ``(..., factor*H, factor*W)``.
    """
    x = np.asarray(lowdose, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError("need at least 2 dimensions")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if method not in _ORDER:
        raise ValueError(f"unknown method {method!r}; use one of {list(_ORDER)}")
    factor = int(factor)
    if method == "nearest":
        return np.repeat(np.repeat(x, factor, axis=-2), factor, axis=-1)
    if method == "bicubic":  # scipy's zoom, as phase filters (pairscope._spline)
        return upsample_cubic(x, factor)
    zooms = (1,) * (x.ndim - 2) + (factor, factor)
    return zoom(x, zooms, order=_ORDER[method], mode="reflect", grid_mode=True)
