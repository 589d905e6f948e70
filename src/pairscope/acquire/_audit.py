"""Audit a run's pairing by the core's own receive times, not the pairer's clocks.

For each frame the core recorded when it received it (``received_ms``); a camera
reads a frame out when its exposure ends, so ``[received − exposure, received]``
bounds the exposure independently of how pairscope mapped the cameras' clocks.
Two frames are *same-instant partners* when these windows overlap by at least
half the shorter exposure.  The audit counts how many such partners existed (a
maximum one-to-one matching) and how many the run paired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PairingAudit:
    """Same-instant partners that existed, and what the run made of them."""

    lowdose_frames: int
    reference_frames: int
    partners_existed: int  # same-instant partners a one-to-one pairing could form
    partners_paired: int  # pairs whose frames are same-instant partners
    other_pairs: int  # pairs whose frames are not (nearest exposures, free-running)

    @property
    def ratio(self) -> float:
        return (
            self.partners_paired / self.partners_existed
            if self.partners_existed
            else 1.0
        )


def audit_pairing(records: Iterable[Mapping[str, Any]]) -> PairingAudit:
    """Audit pair records (``pairs.jsonl`` lines or ``Run.records``)."""
    lows: list[tuple[float, float]] = []
    refs: list[tuple[float, float]] = []
    paired = other = 0
    for rec in records:
        low, ref = _window(rec.get("lowdose")), _window(rec.get("reference"))
        if low is not None:
            lows.append(low)
        if ref is not None:
            refs.append(ref)
        if low is not None and ref is not None:
            if _same_instant(low, ref):
                paired += 1
            else:
                other += 1
    return PairingAudit(len(lows), len(refs), _max_matching(lows, refs), paired, other)


def _window(frame: Mapping[str, Any] | None) -> tuple[float, float] | None:
    if not frame or frame.get("received_ms") is None:
        return None
    end = float(frame["received_ms"])
    return end - float(frame["exposure_ms"]), end


def _same_instant(a: tuple[float, float], b: tuple[float, float]) -> bool:
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    return overlap >= 0.5 * min(a[1] - a[0], b[1] - b[0])


def _max_matching(
    lows: list[tuple[float, float]], refs: list[tuple[float, float]]
) -> int:
    """Greedy in time order: optimal for windows of one length per camera."""
    lows, refs = sorted(lows), sorted(refs)
    j = matched = 0
    for low in lows:
        while j < len(refs) and refs[j][1] < low[0]:
            j += 1
        k = j
        while k < len(refs) and refs[k][0] <= low[1]:
            if _same_instant(low, refs[k]):
                matched += 1
                j = k + 1
                break
            k += 1
    return matched
