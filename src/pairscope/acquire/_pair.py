"""The unit of paired acquisition: one low-dose frame and its reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np


class CameraFrameInfo(TypedDict, total=False):
    """Per-camera facts recorded with every frame of a pair."""

    label: str
    image_number: int
    timestamp_ms: float
    exposure_ms: float
    binning: int
    gain: float | None
    pixel_size_um: float | None
    shape: tuple[int, int]


class PairMetadata(TypedDict, total=False):
    """Per-pair metadata (a TypedDict: nothing is validated on the hot path)."""

    trigger_index: int
    event_index: dict[str, int]
    lowdose: CameraFrameInfo
    reference: CameraFrameInfo | None
    time_difference_ms: float | None
    split_ratio: float | None
    light_power: float | None
    stage_xyz_um: tuple[float | None, float | None, float | None]
    mode: str


@dataclass(frozen=True, slots=True)
class Pair:
    """A low-dose frame and the reference frame of the same specimen instant.

    ``reference`` is ``None`` when the reference camera was not due at this
    trigger (sparse-reference mode).  ``lowdose`` is on the coarse (binned) grid,
    ``reference`` on the fine grid; their shape ratio is the binning factor.
    """

    index: int
    lowdose: np.ndarray
    reference: np.ndarray | None
    metadata: PairMetadata = field(default_factory=lambda: PairMetadata())

    @property
    def factor(self) -> int:
        """Binning ratio reference/low-dose (the low-dose binning without a reference)."""
        if self.reference is None:
            return int(self.metadata.get("lowdose", {}).get("binning", 1) or 1)
        return self.reference.shape[-1] // self.lowdose.shape[-1]
