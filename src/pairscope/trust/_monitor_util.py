"""Small helpers shared by the monitor and the calibration."""

from __future__ import annotations

import numpy as np


def central(
    low: np.ndarray, ref: np.ndarray, f: int, size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """The central ``size``² of the reference and the matching low-dose crop, float32
    (the registration is about the frame centre: the same answer at a fraction of the
    work)."""
    h, w = low.shape
    n = min(size // f, h, w)
    y0, x0 = (h - n) // 2, (w - n) // 2
    return (
        low[y0 : y0 + n, x0 : x0 + n].astype(np.float32),
        ref[y0 * f : (y0 + n) * f, x0 * f : (x0 + n) * f].astype(np.float32),
    )
