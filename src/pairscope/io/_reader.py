"""Read a run folder: pairs as numpy arrays with their metadata, crash or not."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import layout as L
from ._storage import storage_of

logger = logging.getLogger(__name__)


def same_instant(record: dict[str, Any] | None) -> bool:
    """Whether a pair's two frames claim, and show, the same specimen instant:
    ``simultaneous`` is not false and, where both cameras report the trigger they
    read (``camera_trigger_index``), it is the same trigger."""
    rec = record or {}
    if rec.get("simultaneous") is False:
        return False
    return (
        same_trigger(rec.get("lowdose") or {}, rec.get("reference") or {}) is not False
    )


def same_trigger(low: Mapping[str, Any], ref: Mapping[str, Any]) -> bool | None:
    """Whether two frames' cameras read the same trigger (``camera_trigger_index``,
    the cameras' own report); ``None`` where either does not report one."""
    a, b = low.get("camera_trigger_index"), ref.get("camera_trigger_index")
    return None if a is None or b is None else a == b


def is_dark(record: dict[str, Any] | None) -> bool:
    """Whether a pair was logged with the light off (``light_power`` 0; a rig
    without a light-power property records none: not dark)."""
    power = (record or {}).get("light_power")
    return power is not None and float(power) == 0


@dataclass(frozen=True, slots=True)
class RunPair:
    """One pair read back from disk (``lowdose`` is ``None`` when its frame was lost,
    ``reference`` when the reference camera was not due or its frame was lost)."""

    index: int
    lowdose: np.ndarray | None
    reference: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)


class Run:
    """A run folder.  The manifest decides which frames exist (not the TIFFs)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / L.MANIFEST).is_file():
            raise FileNotFoundError(
                f"{self.path} is not a pairscope run folder (no {L.MANIFEST}). Pass "
                "the folder that 'pairscope demo' or 'pairscope acquire' printed."
            )
        info_path = self.path / L.RUN_INFO
        self.info: dict[str, Any] = (
            json.loads(info_path.read_text()) if info_path.is_file() else {}
        )
        self.records, self.damaged_lines = _read_manifest(self.path / L.MANIFEST)
        self.storage = storage_of(self.path, self.info)
        self._handles: dict[str, Any] = {}  # the storage's open files / arrays

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> RunPair:
        rec = self.records[i]
        low_info, ref_info = rec.get("lowdose"), rec.get("reference")
        low = self._page("lowdose", low_info["page"]) if low_info else None
        ref = self._page("reference", ref_info["page"]) if ref_info else None
        return RunPair(rec["trigger_index"], low, ref, rec)

    def __iter__(self) -> Iterator[RunPair]:
        for i in range(len(self)):
            yield self[i]

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def factor(self) -> int:
        return (
            int(self.info.get("detectors", {}).get("factor", 0))
            or self._factor_from_data()
        )

    @property
    def calibration(self) -> dict[str, Any] | None:
        path = self.path / L.CALIBRATION
        return json.loads(path.read_text()) if path.is_file() else None

    def with_reference(self) -> list[int]:
        """Indices of complete pairs: a low-dose frame and its reference."""
        return [
            i
            for i, r in enumerate(self.records)
            if r.get("reference") and r.get("lowdose")
        ]

    def same_instant_pairs(self) -> list[int]:
        """Indices of complete pairs whose two frames are of one instant
        (:func:`same_instant`): what registration, noise fits and trust use."""
        return [i for i in self.with_reference() if same_instant(self.records[i])]

    def with_lowdose(self) -> list[int]:
        """Indices of pairs that have a low-dose frame (all but lost partners)."""
        return [i for i, r in enumerate(self.records) if r.get("lowdose")]

    @property
    def status(self) -> str:
        """``run.json``'s status (``running`` also for a run interrupted hard)."""
        return str(self.info.get("status", "unknown"))

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "_handles"):  # absent if __init__ failed
            self.storage.close_cache(self._handles)

    def _page(self, role: str, page: int) -> np.ndarray:
        return self.storage.read_frame(self.path, role, page, self._handles)

    def _factor_from_data(self) -> int:
        for i in self.with_reference()[:1]:
            p = self[i]
            assert p.reference is not None and p.lowdose is not None
            return p.reference.shape[-1] // p.lowdose.shape[-1]
        return 1


def _read_manifest(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse ``pairs.jsonl``; a line cut by a crash is skipped and counted."""
    records, damaged = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            damaged += 1
    if damaged:
        logger.warning("%s: %d damaged manifest line(s) skipped", path, damaged)
    return records, damaged


def open_run(path: str | Path) -> Run:
    """Open a run folder written by pairscope."""
    return Run(path)
