"""Semi-synthetic low-dose frames from references, through the fitted camera model."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from pairscope._binning import bin_sum
from pairscope.io.dataset import PairDataset

from ._noise_fit import NoiseModel
from ._psf_fit import PsfModel, random_points
from ._textures import random_textured_objects

__all__ = ["CrappifiedDataset", "can_simulate", "crappify"]

ADU_MAX = 65535


def can_simulate(noise: NoiseModel, dose_ratio: float | None = None) -> bool:
    """Whether :func:`crappify` can simulate the low-dose camera with ``noise``: it
    needs the dose ratio (``noise.dose_ratio`` unless given) and the reference gain
    and offset, which :func:`fit_noise_model` fills in where the run records them."""
    ratio = noise.dose_ratio if dose_ratio is None else dose_ratio
    known = (ratio, noise.reference_gain_e_per_adu, noise.reference_offset_adu)
    return all(math.isfinite(v) for v in known)


def crappify(
    reference: np.ndarray,
    factor: int,
    noise: NoiseModel,
    *,
    dose_ratio: float | None = None,
    rng: np.random.Generator,
) -> np.ndarray:
    """A low-dose, ``factor``-binned uint16 frame simulated from ``reference`` (ADU).

    Reference ADU minus its offset → electrons (reference gain) → × ``dose_ratio``
    (``noise.dose_ratio`` if ``None``) → Poisson → sum ``factor²`` blocks (charge
    binning) → + read noise → ADU (low-dose gain) + offset → rounded, clipped to
    16 bit.  The reference's own noise, scaled by ``dose_ratio``, is carried along
    (a variance ``dose_ratio`` times smaller than the added shot noise).
    """
    if not can_simulate(noise, dose_ratio):
        raise ValueError(
            "crappify needs dose_ratio and the reference gain/offset (fit_noise_model "
            "fills them in)"
        )
    ratio = noise.dose_ratio if dose_ratio is None else dose_ratio
    off_ref, g_ref = noise.reference_offset_adu, noise.reference_gain_e_per_adu
    electrons = np.maximum(np.asarray(reference, np.float64) - off_ref, 0) * g_ref
    counts = rng.poisson(electrons * ratio).astype(np.float64)
    counts = bin_sum(counts, factor)
    counts += rng.standard_normal(counts.shape) * noise.read_noise_e
    adu = counts / noise.gain_e_per_adu + noise.offset_adu
    return np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)


class CrappifiedDataset(Dataset):
    """``base`` items where a ``fraction`` of the low-dose crops are semi-synthetic.

    The synthetic low-dose crop is made from the (registered, augmented) reference
    crop, so it is perfectly aligned with its target.  ``dose_jitter`` varies the
    photon level: the specimen's brightness (the target crop above its offset) is
    scaled by a factor drawn from ``[1 - j, 1 + j]`` and the low-dose crop simulated
    from it at the fitted dose ratio, so shot noise and signal stay consistent and
    the low-dose / reference relation the model learns is the camera's, not a
    guess.  ``specimen_mix`` is the fraction of synthetic items whose specimen is
    the sum of the item's reference crop and another random item's (each above
    the offset, each with its own brightness draw): fluorescence adds, so the sum
    is a denser specimen imaged through the same optics, and the low-dose crop is
    simulated from it.  ``point_emitters`` is the fraction of synthetic items to
    which a field of point emitters rendered through the measured ``psf`` is
    added (:func:`~pairscope.train._psf_fit.random_points`): the one structure
    every specimen is made of, at separations down to below the resolution limit.
    ``textured_objects`` is the fraction of synthetic items to which extended,
    textured objects through the ``psf`` are added
    (:func:`~pairscope.train._textures.random_textured_objects`): the large
    structures (nuclei, cytoplasm) a set of references may lack.
    Which items are synthetic and their draws come from torch's global RNG, like
    the crops.
    """

    def __init__(
        self,
        base: PairDataset,
        noise: NoiseModel,
        *,
        fraction: float = 0.5,
        dose_ratio: float | None = None,
        dose_jitter: float = 0.0,
        specimen_mix: float = 0.0,
        point_emitters: float = 0.0,
        textured_objects: float = 0.0,
        psf: PsfModel | None = None,
    ) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        if not 0 <= dose_jitter < 1:
            raise ValueError(f"dose_jitter must be in [0, 1), got {dose_jitter}")
        if not 0 <= specimen_mix <= 1:
            raise ValueError(f"specimen_mix must be in [0, 1], got {specimen_mix}")
        for name, value in (("point_emitters", point_emitters),
                            ("textured_objects", textured_objects)):  # fmt: skip
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
            if value and psf is None:
                raise ValueError(f"{name} needs the measured psf")
        self.dose_jitter, self.specimen_mix = dose_jitter, specimen_mix
        self.point_emitters, self.textured_objects = point_emitters, textured_objects
        self.psf = psf
        self.base, self.noise = base, noise
        self.fraction, self.dose_ratio = fraction, dose_ratio
        self.normalization = base.normalization

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, ref = self.base.sample(index)
        if not (self.fraction and torch.rand(()).item() < self.fraction):
            return self.base.to_tensors(low, ref)
        seed = int(torch.randint(0, 2**63 - 1, ()).item())
        offset = self.noise.reference_offset_adu
        specimen = self._brightness() * (ref - offset)
        if self.specimen_mix and torch.rand(()).item() < self.specimen_mix:
            other = int(torch.randint(0, len(self.base), ()).item())
            _, ref2 = self.base.sample(other)
            specimen += self._brightness() * (ref2 - offset)
        drawn_through_psf = (
            (self.point_emitters, random_points),
            (self.textured_objects, random_textured_objects),
        )
        for stream, (share, draw) in enumerate(drawn_through_psf, start=1):
            if share and torch.rand(()).item() < share:
                assert self.psf is not None
                rng = np.random.default_rng((seed, stream))
                specimen += self._brightness() * draw(specimen.shape, self.psf, rng)
        ref = np.minimum(offset + specimen, ADU_MAX).astype(np.float32)
        low = crappify(
            ref,
            self.base.factor,
            self.noise,
            dose_ratio=self.dose_ratio,
            rng=np.random.default_rng(seed),
        ).astype(np.float32)
        return self.base.to_tensors(low, ref)

    def _brightness(self) -> float:
        """A brightness factor drawn from ``[1 - dose_jitter, 1 + dose_jitter]``."""
        if not self.dose_jitter:
            return 1.0
        return 1 + self.dose_jitter * (2 * float(torch.rand(()).item()) - 1)
