"""The unit of paired acquisition: one low-dose frame and its reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from ._timing import FrameRecord

CameraFrameInfo = FrameRecord  # the per-frame record (kept name)


class PairMetadata(TypedDict, total=False):
    """Per-pair metadata (a TypedDict: nothing is validated on the hot path)."""

    trigger_index: int
    event_index: dict[str, int]
    lowdose: FrameRecord | None
    reference: FrameRecord | None
    simultaneous: bool  # the two exposures overlapped by >= half the shorter one
    exposure_overlap_ms: float | None
    partner_missing: str  # why a frame is alone (missed trigger, camera failed)
    split_ratio: float | None
    light_power: float | None
    stage_xyz_um: tuple[float | None, float | None, float | None]
    mode: str


@dataclass(frozen=True, slots=True)
class Pair:
    """A low-dose frame and the reference frame of the same specimen instant.

    ``reference`` is ``None`` when the reference camera was not due (sparse mode)
    or its frame was lost; ``lowdose`` is ``None`` for a reference frame whose
    low-dose partner was lost (kept, never dropped).  ``metadata["simultaneous"]``
    says whether the two exposures overlapped.
    """

    index: int
    lowdose: np.ndarray | None
    reference: np.ndarray | None
    metadata: PairMetadata = field(default_factory=lambda: PairMetadata())

    @property
    def complete(self) -> bool:
        return self.lowdose is not None and self.reference is not None

    @property
    def factor(self) -> int:
        """Grid ratio reference / low-dose (the low-dose binning without both)."""
        if self.lowdose is None or self.reference is None:
            low = self.metadata.get("lowdose") or {}
            return int(low.get("binning", 1) or 1)
        return self.reference.shape[-1] // self.lowdose.shape[-1]
