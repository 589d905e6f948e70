"""The rig model: a run's optics and cameras, measured or declared once.

One frozen, versioned, torch-free record, built when a run starts (``run.json`` key
``rig_model``), refined by what pairscope measures later (the registration and
photometry in ``calibration.json``), and embedded in model files.  Trust, train,
evaluate, restore, fine-tune, preview, napari and export read a rig's facts from it
and nowhere else.

Every figure may be missing: hardware without a light-power property, a split ratio,
an objective NA or camera timestamps still runs; :attr:`RigModel.missing` says what
is missing and what the user can add to the rig file to supply it.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._psf import airy_otf

__all__ = [
    "RIG_MODEL_VERSION",
    "CameraFacts",
    "Missing",
    "Optics",
    "Photometry",
    "PhotometrySource",
    "RegistrationFacts",
    "RigModel",
]

RIG_MODEL_VERSION: Literal[1] = 1
PhotometrySource = Literal["declared", "measured", "unknown"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


class Photometry(BaseModel):
    """A camera's conversion from ADU to photoelectrons, and where it came from.

    ``e_per_adu`` is the conversion gain (electrons per ADU, the inverse of the
    EMVA 1288 system gain K in ADU/e⁻), ``offset_adu`` the dark level, ``read_noise_e``
    the temporal dark noise in electrons.  ``source``: ``declared`` (the rig file: a
    data sheet or an EMVA 1288 report), ``measured`` (pairscope's photon-transfer fit)
    or ``unknown``.  Never a camera's ``Gain`` property: on real cameras that is an
    EM gain, an analog step or a mode index.
    """

    model_config = _FROZEN

    e_per_adu: float | None = Field(None, gt=0)
    offset_adu: float | None = None
    read_noise_e: float | None = Field(None, ge=0)
    source: PhotometrySource = "unknown"
    #: how it was declared or measured ("rig file demo_rig.yaml", "photon transfer,
    #: 64 pairs", ...)
    method: str = ""

    @field_validator("e_per_adu", "offset_adu", "read_noise_e")
    @classmethod
    def _finite_figures(cls, value: float | None, info: object) -> float | None:
        return _finite(value, getattr(info, "field_name", "a figure"))

    @model_validator(mode="after")
    def _source_matches(self) -> Photometry:
        if self.source != "unknown" and self.e_per_adu is None:
            raise ValueError(f"{self.source} photometry needs e_per_adu")
        return self

    @property
    def known(self) -> bool:
        """The conversion gain and offset are known (read noise may be 0)."""
        return self.e_per_adu is not None and self.offset_adu is not None

    def describe(self) -> str:
        if not self.known:
            return "unknown"
        text = f"{self.e_per_adu:.4g} e-/ADU, offset {self.offset_adu:.4g} ADU"
        if self.read_noise_e is not None:
            text += f", read noise {self.read_noise_e:.3g} e-"
        return f"{text} ({self.source}{': ' + self.method if self.method else ''})"


class CameraFacts(BaseModel):
    """One camera of the pair: where it is, how it samples, its photometry."""

    model_config = _FROZEN

    role: Literal["lowdose", "reference"]
    label: str
    core: str = "primary"
    #: the device adapter's own name for the camera model ("DemoCamera-MultiMode",
    #: "HamamatsuHam_DCAM", ...), where it reports one
    camera_model: str | None = None
    binning: int = Field(1, ge=1)
    #: sample-plane pixel size at that binning, µm (None: no pixel-size config)
    pixel_size_um: float | None = Field(None, gt=0)
    photometry: Photometry = Photometry()

    @property
    def unbinned_pixel_size_um(self) -> float | None:
        return None if self.pixel_size_um is None else self.pixel_size_um / self.binning


class Optics(BaseModel):
    """The light path shared by both cameras."""

    model_config = _FROZEN

    numerical_aperture: float | None = Field(None, gt=0, le=1.7)
    wavelength_nm: float | None = Field(None, gt=100, lt=2000)
    #: fraction of the light on the low-dose camera (0.1 behind a 90:10 splitter)
    split_ratio: float | None = Field(None, gt=0, le=1)
    #: the property that sets the light power ("LED-Power_percent"), if any
    light_power_property: str | None = None

    @property
    def rayleigh_um(self) -> float | None:
        """``0.61 λ / NA`` in the sample plane."""
        if self.numerical_aperture is None or self.wavelength_nm is None:
            return None
        return 0.61 * self.wavelength_nm / 1000.0 / self.numerical_aperture

    def otf(self, shape: tuple[int, int], pixel_um: float) -> np.ndarray | None:
        """The in-focus widefield OTF (Airy PSF) on the ``rfft2`` grid of an image
        of ``shape`` at ``pixel_um``; ``None`` while NA or wavelength is unknown."""
        if self.numerical_aperture is None or self.wavelength_nm is None:
            return None
        return airy_otf(
            shape, pixel_um, self.numerical_aperture, self.wavelength_nm / 1000.0
        )

    @property
    def psf_sigma_um(self) -> float | None:
        """The Gaussian approximation of the widefield PSF: ``0.21 λ / NA``."""
        if self.numerical_aperture is None or self.wavelength_nm is None:
            return None
        return 0.21 * self.wavelength_nm / 1000.0 / self.numerical_aperture


class RegistrationFacts(BaseModel):
    """Where the low-dose camera's pixels fall on the reference grid."""

    model_config = _FROZEN

    shift_y_px: float = 0.0  # reference pixels
    shift_x_px: float = 0.0
    scale: float = Field(1.0, gt=0)
    source: Literal["calibrated", "live estimate", "not measured"] = "not measured"
    pairs: int = 0


class Missing(BaseModel):
    """A fact the rig does not report, and what the user can add to supply it."""

    model_config = _FROZEN

    what: str
    fix: str


class RigModel(BaseModel):
    """A run's optics and cameras (module doc)."""

    model_config = _FROZEN

    version: Literal[1] = RIG_MODEL_VERSION
    rig: str = "rig"  # the rig file's name, or the config's
    mode: str = "triggered"
    factor: int = Field(ge=1)
    lowdose: CameraFacts
    #: None in alternating mode (one camera, two binnings): :meth:`camera` gives
    #: the low-dose camera at binning 1 for the reference role
    reference: CameraFacts
    optics: Optics = Optics()
    registration: RegistrationFacts = RegistrationFacts()
    missing: tuple[Missing, ...] = ()

    def camera(self, role: str) -> CameraFacts:
        if role == "lowdose":
            return self.lowdose
        if role == "reference":
            return self.reference
        raise ValueError(f"no camera role {role!r} (lowdose or reference)")

    @property
    def rayleigh_reference_px(self) -> float | None:
        """The Rayleigh distance in reference pixels (None: NA or λ unknown)."""
        r, px = self.optics.rayleigh_um, self.reference.pixel_size_um
        return None if r is None or px is None else r / px

    @property
    def photometry_known(self) -> bool:
        return self.lowdose.photometry.known and self.reference.photometry.known

    def with_photometry(self, role: str, photometry: Photometry) -> RigModel:
        cam = self.camera(role).model_copy(update={"photometry": photometry})
        return self.model_copy(update={role: cam})

    def with_registration(self, registration: RegistrationFacts) -> RigModel:
        return self.model_copy(update={"registration": registration})

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")
