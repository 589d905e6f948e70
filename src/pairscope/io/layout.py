"""Names of the files in a run folder (shared by the writer and the reader)."""

from __future__ import annotations

RUN_INFO = "run.json"
MANIFEST = "pairs.jsonl"
LOWDOSE_TIFF = "lowdose.ome.tif"
REFERENCE_TIFF = "reference.ome.tif"
CALIBRATION = "calibration.json"
PREDICTION_TIFF = "restored.prediction.ome.tif"
PREDICTION_INDEX = "restored.jsonl"
#: per restored frame, its trust interval: lower and upper bound as two channels
UNCERTAINTY_TIFF = "restored.uncertainty.ome.tif"
WRITING_LOCK = "writing.lock"  # held (flock) by the writing process, with its PID
RESERVE = ".space-reserve"  # freed at close so the metadata fits on a full disk
IN_PROGRESS_DESCRIPTION = (
    "pairscope run in progress or interrupted: pairs.jsonl lists the frames on disk"
)
ZARR_STORE = "run.ome.zarr"  # the OME-Zarr format's store (both detectors)
FORMATS = ("ome-tiff", "ome-zarr")
ROLES = ("lowdose", "reference")
TIFF_OF_ROLE = {"lowdose": LOWDOSE_TIFF, "reference": REFERENCE_TIFF}
