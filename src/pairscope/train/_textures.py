"""Extended, textured objects through the measured PSF, for synthetic crops.

References of one kind of specimen (filaments, puncta) teach a model nothing about
large objects with inner texture (nuclei, cytoplasm, tissue), and a model that has
not seen them smooths or sharpens them as it would its training structures.  These
objects are generic rather than any specimen's: smooth cell-like masks (a thresholded
long-range Gaussian random field) filled with a log-normal texture whose power
spectrum falls as a power law (as natural images and cell interiors do), imaged
through the PSF and as bright as the measured spots.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ._psf_fit import PsfModel

__all__ = ["random_textured_objects"]


def _power_law_field(
    shape: tuple[int, int], beta: float, rng: np.random.Generator
) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with power ∝ f^-beta."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx) + 1.0 / max(shape)  # no infinite power at f = 0
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) * f ** (-beta / 2)
    field = np.fft.irfft2(spectrum, s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def random_textured_objects(
    shape: tuple[int, int], psf: PsfModel, rng: np.random.Generator
) -> np.ndarray:
    """Textured objects through ``psf`` (ADU above offset, ``shape`` reference px).

    Masks: a field with power ∝ f^-4 above a threshold drawn from [0, 1] standard
    deviations (16-50 % of the area covered), edges softened over 1-3 px.  Texture:
    ``exp(c * g)`` with ``g`` a field with power ∝ f^-beta, beta from [1, 3], contrast
    ``c`` from [0.3, 1].  The product seen through the PSF's Gaussian has its peak at
    ``psf.peak_adu`` times a log-normal draw (as bright as the measured spots).
    """
    cells = _power_law_field(shape, 4.0, rng) > rng.uniform(0.0, 1.0)
    mask = gaussian_filter(cells.astype(np.float64), rng.uniform(1.0, 3.0))
    contrast, beta = rng.uniform(0.3, 1.0), rng.uniform(1.0, 3.0)
    texture = np.exp(contrast * _power_law_field(shape, beta, rng))
    image = gaussian_filter(texture * mask, psf.sigma_px)
    peak = float(image.max())
    if peak <= 0:  # no object in this crop
        return np.zeros(shape, np.float64)
    return image * (psf.peak_adu * rng.lognormal(-0.3, 0.5) / peak)
