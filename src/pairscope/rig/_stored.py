"""Camera photometry measured by ``pairscope calibrate-camera`` and stored beside
the rig file (``<rig stem>.photometry.json``) for every later run on that rig.

A stored measurement applies to a camera only while it is the same camera: the
same label, adapter model and binning.  A damaged file, or one of another version,
is reported in one warning and ignored (the runs then say the photometry is
missing, as without the file).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._model import Photometry

__all__ = [
    "STORED_PHOTOMETRY_VERSION",
    "StoredCamera",
    "StoredPhotometry",
    "read_stored_photometry",
    "stored_photometry_path",
    "write_stored_photometry",
]

logger = logging.getLogger(__name__)

STORED_PHOTOMETRY_VERSION: Literal[1] = 1
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class StoredCamera(BaseModel):
    """One camera's measured photometry and what identifies the camera."""

    model_config = _FROZEN

    label: str
    #: "<adapter library>/<device name>" ("DemoCamera/DCam"), as runs record it
    camera_model: str | None = None
    binning: int = Field(1, ge=1)
    photometry: Photometry
    measured: datetime

    def same_camera(self, label: str, camera_model: str | None, binning: int) -> bool:
        return (self.label, self.camera_model, self.binning) == (
            label,
            camera_model,
            binning,
        )

    def as_measured(self) -> Photometry:
        """The photometry as a run records it (``source: measured``)."""
        return self.photometry.model_copy(
            update={
                "source": "measured",
                "method": f"pairscope calibrate-camera {self.measured.date().isoformat()}",
            }
        )


class StoredPhotometry(BaseModel):
    """The file ``pairscope calibrate-camera`` writes (version 1)."""

    model_config = _FROZEN

    version: Literal[1] = STORED_PHOTOMETRY_VERSION
    rig: str  # the rig file's name
    cameras: dict[Literal["lowdose", "reference"], StoredCamera] = {}

    def find(
        self, role: str, label: str, camera_model: str | None, binning: int
    ) -> StoredCamera | None:
        """The stored measurement of this camera (the same role's first)."""
        entries = sorted(self.cameras.items(), key=lambda kv: kv[0] != role)
        for _, entry in entries:
            if entry.same_camera(label, camera_model, binning):
                return entry
        return None

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def stored_photometry_path(rig_file: str | Path) -> Path:
    """Where a rig's measured photometry is kept: beside the rig file."""
    rig_file = Path(rig_file)
    return rig_file.with_name(f"{rig_file.stem}.photometry.json")


def read_stored_photometry(path: str | Path) -> StoredPhotometry | None:
    """The stored photometry at ``path``; None where there is none, or (with one
    warning) where the file is damaged or of another version."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("Ignoring %s: it cannot be read (%s)", path, exc)
        return None
    version = data.get("version") if isinstance(data, Mapping) else None
    if version != STORED_PHOTOMETRY_VERSION:
        logger.warning(
            "Ignoring %s: it is %s, this pairscope reads version %d; measure the "
            "cameras again with 'pairscope calibrate-camera'",
            path,
            f"version {version}" if version is not None else "not a photometry file",
            STORED_PHOTOMETRY_VERSION,
        )
        return None
    try:
        return StoredPhotometry.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        logger.warning(
            "Ignoring %s: it is damaged (%s: %s); measure the cameras again with "
            "'pairscope calibrate-camera'",
            path,
            where,
            err["msg"],
        )
        return None


def write_stored_photometry(path: str | Path, stored: StoredPhotometry) -> None:
    """Write ``stored`` to ``path`` (atomically: the old file or the new one)."""
    from .._files import write_atomic

    text = json.dumps(stored.to_json(), indent=2) + "\n"
    write_atomic(path, text.encode())
