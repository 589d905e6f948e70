"""Camera physics: photons to ADU, with shot noise, QE, read noise, gain and binning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._binning import bin_sum

ADU_MAX = 65535


@dataclass(frozen=True, slots=True)
class Sensor:
    """A scientific camera's photon-transfer parameters.

    ``gain_e_per_adu`` is the conversion gain (electrons per ADU), as in a
    photon-transfer curve: mean ADU = offset + QE·photons / gain.
    """

    quantum_efficiency: float = 0.8
    read_noise_e: float = 1.6
    gain_e_per_adu: float = 0.5
    offset_adu: float = 100.0

    def expose(
        self, photons: np.ndarray, binning: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Turn expected photons per sensor pixel into a 16-bit frame.

        Binning sums charge on chip (before read-out), so the binned pixel gets the
        Poisson statistics of the summed signal and one read noise, not ``b²``.
        """
        electrons = photons * self.quantum_efficiency
        electrons = bin_sum(electrons, binning)
        counts = rng.poisson(np.maximum(electrons, 0.0)).astype(np.float32)
        counts += (
            rng.standard_normal(counts.shape, dtype=np.float32) * self.read_noise_e
        )
        adu = counts / self.gain_e_per_adu + self.offset_adu
        return np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)
