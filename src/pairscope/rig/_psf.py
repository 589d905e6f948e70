"""The widefield PSF of an aberration-free circular pupil, as its OTF."""

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
