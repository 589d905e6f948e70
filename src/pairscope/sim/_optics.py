"""Widefield fluorescence optics: the incoherent OTF, defocus and the Rayleigh limit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rig import airy_otf

IMMERSION_INDEX = 1.33  # water; sets the defocus cone angle


@dataclass(frozen=True, slots=True)
class Optics:
    """Emission wavelength and numerical aperture of the objective."""

    wavelength_um: float = 0.52
    na: float = 1.2

    @property
    def rayleigh_um(self) -> float:
        """Rayleigh distance 0.61·λ/NA: the two-point resolution limit."""
        return 0.61 * self.wavelength_um / self.na

    @property
    def cutoff_per_um(self) -> float:
        """Incoherent cut-off frequency 2·NA/λ."""
        return 2.0 * self.na / self.wavelength_um

    @property
    def nyquist_pixel_um(self) -> float:
        """Largest pixel that samples the diffraction limit at Nyquist: λ/(4·NA)."""
        return self.wavelength_um / (4.0 * self.na)

    def otf(
        self,
        shape: tuple[int, int],
        pixel_um: float,
        *,
        defocus_um: float = 0.0,
        object_sigma_um: float = 0.0,
    ) -> np.ndarray:
        """Real OTF on the ``rfft2`` grid of an image of ``shape`` sampled at ``pixel_um``.

        The in-focus OTF is the exact one of an aberration-free circular pupil (Airy
        PSF).  Defocus is a Gaussian approximation of the geometric blur disc
        (radius ``|z|·tan(asin(NA/n))``), and ``object_sigma_um`` blurs by the
        object's own size (a 100 nm bead, a tubule's width).
        """
        otf = airy_otf(shape, pixel_um, self.na, self.wavelength_um)
        fy = np.fft.fftfreq(shape[0], d=pixel_um)[:, None]
        fx = np.fft.rfftfreq(shape[1], d=pixel_um)[None, :]
        f = np.sqrt(fx * fx + fy * fy)
        sin_theta = min(self.na / IMMERSION_INDEX, 0.999)
        blur_radius = abs(defocus_um) * sin_theta / np.sqrt(1.0 - sin_theta**2)
        sigma2 = (blur_radius / 2.0) ** 2 + object_sigma_um**2
        if sigma2 > 0:
            otf = otf * np.exp(-2.0 * np.pi**2 * sigma2 * f * f)
        return otf.astype(np.float32)
