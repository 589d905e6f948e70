"""Imaging points: a bilinear splat onto a pixel grid, and the widefield PSF of an
aberration-free circular pupil as its OTF."""

from __future__ import annotations

import numpy as np


def airy_otf(
    shape: tuple[int, int], pixel_um: float, na: float, wavelength_um: float
) -> np.ndarray:
    """Real in-focus OTF (Airy PSF) on the ``rfft2`` grid of an image of ``shape``
    sampled at ``pixel_um``: the incoherent transfer function of a circular pupil,
    cut off at ``2 NA / λ``."""
    fy = np.fft.fftfreq(shape[0], d=pixel_um)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_um)[None, :]
    rho = np.clip(np.sqrt(fx * fx + fy * fy) * wavelength_um / (2.0 * na), 0.0, 1.0)
    return (2.0 / np.pi) * (np.arccos(rho) - rho * np.sqrt(1.0 - rho * rho))


def splat_bilinear(
    shape: tuple[int, int], xy_px: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Point weights spread bilinearly onto a ``shape`` grid (float64); ``xy_px``
    is ``(n, 2)`` as (column, row), pixel centres at integers; points without all
    four neighbours on the grid are left out."""
    h, w = shape
    col, row = xy_px[:, 0], xy_px[:, 1]
    inside = (col >= 0) & (col < w - 1) & (row >= 0) & (row < h - 1)
    col, row, wgt = col[inside], row[inside], weights[inside]
    c0, r0 = np.floor(col).astype(np.intp), np.floor(row).astype(np.intp)
    fc, fr = col - c0, row - r0
    idx = r0 * w + c0
    flat = np.bincount(
        np.concatenate([idx, idx + 1, idx + w, idx + w + 1]),
        np.concatenate(
            [
                wgt * (1 - fr) * (1 - fc),
                wgt * (1 - fr) * fc,
                wgt * fr * (1 - fc),
                wgt * fr * fc,
            ]
        ),
        minlength=h * w,
    )
    return flat.reshape(h, w)
