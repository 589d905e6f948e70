"""The rig model: a run's optics and cameras, measured or declared once, read by
everything (trust, train, evaluate, restore, fine-tune, preview, napari, export)."""

from ._build import (
    PHOTOMETRY_FIX,
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
from ._photometry import (
    PhotometryError,
    paired_photon_transfer,
    photometry_from_frames,
    photometry_from_pairs,
    photometry_from_series,
)
from ._psf import airy_otf, splat_bilinear
from ._run import (
    calibrate_run_photometry,
    measure_run_photometry,
    photometry_disagreement,
    rig_model_for_run,
    save_measured_photometry,
)
from ._stored import (
    StoredCamera,
    StoredPhotometry,
    read_stored_photometry,
    stored_photometry_path,
    write_stored_photometry,
)

__all__ = [
    "PHOTOMETRY_FIX",
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
    "StoredCamera",
    "StoredPhotometry",
    "airy_otf",
    "build_rig_model",
    "calibrate_run_photometry",
    "measure_run_photometry",
    "paired_photon_transfer",
    "photometry_disagreement",
    "photometry_from_frames",
    "photometry_from_pairs",
    "photometry_from_series",
    "read_stored_photometry",
    "rig_model_for_run",
    "rig_model_from_info",
    "save_measured_photometry",
    "splat_bilinear",
    "stored_photometry_path",
    "write_stored_photometry",
]
