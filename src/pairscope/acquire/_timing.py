"""What each camera said about a frame, on the run's one monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypedDict


class FrameRecord(TypedDict, total=False):
    """Per-frame facts written to the manifest (``lowdose`` / ``reference``)."""

    camera: str
    core: str
    camera_image_number: int | None
    exposure_window_ms: list[float]  # [start, end] on the run clock
    # "camera": its own stamps; "core": the core's receive time; "host": pairscope's
    # clock around the call
    timing_source: str
    camera_timestamp_ms: float  # the camera's own stamp, as it wrote it
    received_ms: float  # when the core received the frame, run clock
    exposure_ms: float
    binning: int
    pixel_size_um: float | None
    gain: float | None
    shape: list[int]
    camera_trigger_index: int


class RunClock:
    """Milliseconds since the run started (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def ms(self, t: float | None = None) -> float:
        return ((time.perf_counter() if t is None else t) - self.t0) * 1000.0

    def wall_to_ms(self, wall_s: float) -> float:
        """A wall-clock time (``time.time()``, e.g. a core's receive stamp) on the
        run clock, through the wall clock's reading now (it may be slewed)."""
        return self.ms() - (time.time() - wall_s) * 1000.0


def host_window(
    clock: RunClock, t_call: float, t_return: float, exposure_ms: float
) -> list[float]:
    """Exposure window from the host clock around a snap: it starts when the call
    does and cannot end after the call returned."""
    start = clock.ms(t_call)
    end = min(start + exposure_ms, clock.ms(t_return))
    return [round(start, 3), round(end, 3)]


def overlap_ms(a: FrameRecord, b: FrameRecord) -> float:
    """How long two exposure windows overlapped (0 if they did not)."""
    (a0, a1), (b0, b1) = a["exposure_window_ms"], b["exposure_window_ms"]
    return round(max(0.0, min(a1, b1) - max(a0, b0)), 3)


def simultaneous(a: FrameRecord, b: FrameRecord) -> bool:
    """True only if the windows overlap by at least half of the shorter exposure."""
    shorter = min(a["exposure_ms"], b["exposure_ms"])
    return overlap_ms(a, b) >= 0.5 * shorter


def image_metadata(md: Any) -> dict[str, str]:
    """A ``pymmcore.Metadata`` (or mapping) as a plain ``dict`` of strings."""
    if isinstance(md, Mapping):
        return {str(k): str(v) for k, v in md.items()}
    out: dict[str, str] = {}
    for key in md.GetKeys():
        out[str(key)] = str(md.GetSingleTag(key).GetValue())
    return out


def int_or_none(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
