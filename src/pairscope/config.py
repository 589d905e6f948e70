"""User-facing settings: frozen pydantic models with cross-field checks."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class PairingMode(str, Enum):
    """How a low-dose frame and its reference are obtained.

    ``auto`` picks ``simultaneous`` on a rig of one core per camera and
    ``sequential`` on one core with two cameras.
    """

    AUTO = "auto"
    TRIGGERED = "triggered"  # hardware-triggered sequences, one core per camera
    SIMULTANEOUS = "simultaneous"  # all cores snap at once, each from its own thread
    SPARSE = "sparse"  # as simultaneous/sequential, reference only every N-th trigger
    MULTI_CAMERA = "multi-camera"  # one core, Multi Camera, equal-size detectors
    SEQUENTIAL = "sequential"  # one core, two cameras snapped one after the other
    ALTERNATING = "alternating"  # one camera: binned frame, then unbinned frame


SETTINGS_VERSION: Final = 1
SEQUENCE_METADATA_KEY = "pairscope"


class AcquisitionSettings(BaseModel):
    """How to pair detectors for a run.  Unset camera labels are found automatically."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = SETTINGS_VERSION
    mode: PairingMode = PairingMode.AUTO
    lowdose_camera: str | None = None
    reference_camera: str | None = None
    binning: int | None = Field(
        None, description="Low-dose binning to set before the run (None: keep)."
    )
    reference_every: int = Field(1, ge=1, description="Sparse mode: reference period.")
    trigger: tuple[str, str, str] | None = Field(
        None,
        description="(device, property, value) set once per pair to fire both cameras.",
    )
    lowdose_exposure_ms: float | None = Field(None, gt=0)
    reference_exposure_ms: float | None = Field(None, gt=0)
    split_ratio: float | None = Field(
        None, gt=0, lt=1, description="Fraction of light reaching the reference."
    )
    stage_tolerance_um: float = Field(
        1.0,
        gt=0,
        description="How far the XY stage may be from a target before the run stops.",
    )
    focus_tolerance_um: float = Field(
        0.1,
        gt=0,
        description="How far the focus may be from a target before the run stops.",
    )
    camera_trigger_property: str = Field(
        "LastTriggerIndex",
        description="Camera property reporting the trigger it read (checked if present).",
    )
    buffer_mb: int | None = Field(
        None,
        ge=8,
        description="Circular buffer per core in MB (None: 2 s of frames, >= 64 MB).",
    )
    frame_timeout_ms: float | None = Field(
        None,
        gt=0,
        description="How long a camera may deliver nothing before the run stops "
        "(None: 3 x (exposure + interval) + 2 s).",
    )

    @model_validator(mode="after")
    def _check_mode(self) -> AcquisitionSettings:
        if self.mode is PairingMode.SPARSE and self.reference_every < 2:
            raise ValueError(
                f"sparse mode takes a reference every N-th trigger with N >= 2; got "
                f"reference_every={self.reference_every}. Set reference_every (e.g. 5) "
                "or use mode 'simultaneous'."
            )
        if self.mode is not PairingMode.SPARSE and self.reference_every != 1:
            raise ValueError(
                f"reference_every={self.reference_every} only applies to mode "
                f"'sparse', not {self.mode.value!r}."
            )
        if self.binning is not None and self.binning not in (2, 3, 4, 8):
            raise ValueError(f"binning must be 2, 3, 4 or 8; got {self.binning}.")
        if self.mode is PairingMode.ALTERNATING and self.binning is None:
            raise ValueError(
                "alternating mode switches one camera between binned and unbinned "
                "frames: set binning (e.g. 2)."
            )
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> AcquisitionSettings:
        return cls.model_validate(_load_mapping(path))

    @classmethod
    def resolve(
        cls,
        *layers: dict[str, Any] | None,
    ) -> AcquisitionSettings:
        """Settings from layers, later ones overriding earlier ones key by key
        (e.g. rig file < sequence metadata < settings file < CLI flags typed)."""
        data: dict[str, Any] = {}
        for layer in layers:
            if layer:
                data.update(layer)
        return cls.model_validate(data)

    @staticmethod
    def from_sequence(sequence: Any) -> dict[str, Any]:
        """The settings embedded in ``sequence.metadata["pairscope"]`` (or {})."""
        meta = getattr(sequence, "metadata", None) or {}
        data = meta.get(SEQUENCE_METADATA_KEY) or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"sequence metadata[{SEQUENCE_METADATA_KEY!r}] must be a mapping of "
                f"pairing settings, got {type(data).__name__}."
            )
        return dict(data)


def _load_mapping(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(data).__name__}.")
    return data
