"""Where the trust checks get their noise figures, registration and scale.

Offline (a logged run): the registration stored with the run (or estimated), and the
photon-transfer fit of the low-dose camera (:func:`pairscope.train.fit_noise_model`,
which also gives the reference camera's gain and offset).  Live: the cameras'
offset, gain and read noise as their devices reported them in ``run.json``
(``system_state``), the registration from the first pairs.  Without either, a rough
estimate from the frames themselves (and ``source`` says so).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from ..io import Run
from ..io.calibration import (
    Registration,
    load_registration,
    registration_from_pairs,
)
from ._checks import CameraNoise, TrustCalibration
from ._monitor_util import central as _central

__all__ = [
    "calibration_for_run",
    "calibration_from_info",
    "rayleigh_px_of",
]

logger = logging.getLogger(__name__)


def _camera_props(info: dict[str, Any], role: str) -> dict[str, str]:
    label = info.get("detectors", {}).get(role)
    state = info.get("system_state", {})
    return state.get(label, {}) if isinstance(label, str) else {}


def camera_noise_from_props(props: dict[str, str]) -> CameraNoise | None:
    """A camera's noise model from its device properties (``Gain`` in e⁻/ADU,
    ``Offset`` in ADU, ``ReadNoise_e``), or ``None`` if it does not report them."""
    try:
        noise = CameraNoise(
            float(props["Gain"]),
            float(props["Offset"]),
            float(props.get("ReadNoise_e", 0.0)),
        )
    except (KeyError, ValueError, TypeError):
        return None
    # a real camera's Gain is an EM gain, an analog step or a mode index (Micro-
    # Manager's DemoCamera says 0): only a finite, positive figure can be e-/ADU
    figures = (noise.gain_e_per_adu, noise.offset_adu, noise.read_noise_e)
    if not all(math.isfinite(v) for v in figures) or noise.gain_e_per_adu <= 0:
        return None
    return noise


def rough_noise(frames: Sequence[np.ndarray]) -> CameraNoise:
    """A rough noise model from frames alone: offset at the dark floor, gain 1 and
    the read noise from the dark pixels' scatter (used when nothing better exists)."""
    x = np.asarray(frames[0], np.float64)
    smooth = gaussian_filter(x, 2.0)
    dark = smooth <= np.percentile(smooth, 10)
    offset = float(np.median(x[dark]))
    read = float(np.std((x - smooth)[dark]))
    return CameraNoise(1.0, offset, read)


def rayleigh_px_of(info: dict[str, Any], reference_pixel_um: float | None) -> float:
    """The Rayleigh distance in reference pixels: from the demo hub, else 2 pixels
    (a Nyquist-sampled reference)."""
    hub = info.get("system_state", {}).get("DemoHub", {})
    r = hub.get("RayleighDistance_um")
    if r is not None and reference_pixel_um:
        return float(r) / float(reference_pixel_um)
    return 2.0


def _reference_pixel_um(records: Sequence[dict[str, Any]]) -> float | None:
    for rec in records:
        ref = rec.get("reference")
        if ref and ref.get("pixel_size_um"):
            return float(ref["pixel_size_um"])
    return None


def calibration_from_info(
    info: dict[str, Any],
    factor: int,
    registration: Registration,
    *,
    reference_pixel_um: float | None = None,
    frames: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrustCalibration:
    """Live calibration: camera properties from ``run.json``, else a rough estimate
    from ``frames`` (a low-dose and a reference frame)."""
    low = camera_noise_from_props(_camera_props(info, "lowdose"))
    ref = camera_noise_from_props(_camera_props(info, "reference"))
    source = "camera properties (run.json)"
    if low is None or ref is None:
        if frames is None:
            raise ValueError("no camera noise figures in run.json and no frames")
        low = low or rough_noise([frames[0]])
        ref = ref or rough_noise([frames[1]])
        source = "rough estimate from the frames (cameras report no gain/offset)"
    return TrustCalibration(
        factor=factor,
        lowdose=low,
        reference=ref,
        registration=registration,
        rayleigh_px=rayleigh_px_of(info, reference_pixel_um),
        source=source,
    )


def _registration(run: Run, usable: list[int]) -> Registration:
    """The stored registration, else one estimated from the central 128² of up to 8
    pairs of the same instant (shift and scale; the whole-frame fit of
    ``pairscope calibrate`` takes minutes on large frames and is not needed here)."""
    reg = load_registration(run)
    if reg is not None:
        return reg
    if len(usable) < len(run.with_reference()):
        logger.warning(
            "%s: %d pairs are not of one instant; registering on the other %d",
            run.path,
            len(run.with_reference()) - len(usable),
            len(usable),
        )
    step = max(1, len(usable) // 8)
    f = run.factor
    pairs = []
    for i in usable[::step][:8]:
        p = run[i]
        assert p.lowdose is not None and p.reference is not None  # usable pairs
        pairs.append(_central(p.lowdose, p.reference, f, 128))
    return registration_from_pairs(pairs, f, fit_scale=True)


class _RunWithRegistration(Run):
    """``run`` as the noise fit sees it: with our registration as its calibration."""

    def __init__(self, path: Path, registration: Registration) -> None:
        super().__init__(path)
        self._registration = registration

    @property
    def calibration(self) -> dict[str, Any] | None:
        return {"registration": asdict(self._registration)}


def calibration_for_run(run: Run, *, fit_noise: bool = True) -> TrustCalibration:
    """Offline calibration of ``run`` (module doc).  The noise fit needs every pair
    to be of one instant; a run with mixed pairs uses the camera properties."""
    usable = run.same_instant_pairs()
    if not usable:
        raise ValueError(f"{run.path}: no pair with a reference of the same instant")
    reg = _registration(run, usable)
    fit_noise = fit_noise and len(usable) == len(run.with_reference())
    px = _reference_pixel_um(run.records)
    low = camera_noise_from_props(_camera_props(run.info, "lowdose"))
    ref = camera_noise_from_props(_camera_props(run.info, "reference"))
    source = "camera properties (run.json)"
    if fit_noise:
        try:
            from ..train._noise_fit import fit_noise_model

            nm = fit_noise_model([_RunWithRegistration(run.path, reg)], max_pairs=16)
            low = CameraNoise(nm.gain_e_per_adu, nm.offset_adu, nm.read_noise_e)
            ref_read = ref.read_noise_e if ref is not None else 0.0
            if math.isfinite(nm.reference_offset_adu):
                ref = CameraNoise(
                    nm.reference_gain_e_per_adu, nm.reference_offset_adu, ref_read
                )
            source = "photon-transfer fit of the low-dose camera (pairscope.train)"
        except Exception as exc:  # no illuminated pairs, no gain recorded, ...
            logger.warning(
                "noise fit of %s failed (%s); using camera properties", run.path, exc
            )
    if low is None or ref is None:
        pair = run[usable[0]]
        assert pair.lowdose is not None and pair.reference is not None  # usable
        low = low or rough_noise([pair.lowdose])
        ref = ref or rough_noise([pair.reference])
        source = "rough estimate from the frames (cameras report no gain/offset)"
    return TrustCalibration(
        factor=run.factor,
        lowdose=low,
        reference=ref,
        registration=reg,
        rayleigh_px=rayleigh_px_of(run.info, px),
        source=source,
    )
