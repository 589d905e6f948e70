"""The rig model: a run's optics and cameras, measured or declared once, read by
everything (trust, train, evaluate, restore, fine-tune, preview, napari, export)."""

from ._build import (
    DeclaredOptics,
    DeclaredPhotometry,
    build_rig_model,
    rig_model_from_info,
)
from ._model import (
    RIG_MODEL_VERSION,
    CameraFacts,
    Missing,
    Optics,
    Photometry,
    RegistrationFacts,
    RigModel,
)
from ._photometry import PhotometryError, photometry_from_frames, photometry_from_series
from ._run import (
    measure_run_photometry,
    photometry_disagreement,
    rig_model_for_run,
    save_measured_photometry,
)

__all__ = [
    "RIG_MODEL_VERSION",
    "CameraFacts",
    "DeclaredOptics",
    "DeclaredPhotometry",
    "Missing",
    "Optics",
    "Photometry",
    "PhotometryError",
    "RegistrationFacts",
    "RigModel",
    "build_rig_model",
    "measure_run_photometry",
    "photometry_disagreement",
    "photometry_from_frames",
    "photometry_from_series",
    "rig_model_for_run",
    "rig_model_from_info",
    "save_measured_photometry",
]
