"""Charge binning, the one implementation shared by the simulator, calibration,
crappifier and metrics."""

from __future__ import annotations

import numpy as np


def bin_sum(img: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` blocks of the last two axes (on-chip charge binning).

    Trailing rows and columns that do not fill a block are dropped.
    """
    if factor == 1:
        return img
    h, w = img.shape[-2] // factor, img.shape[-1] // factor
    a = img[..., : h * factor, : w * factor]
    return a.reshape(*a.shape[:-2], h, factor, w, factor).sum(axis=(-3, -1))
