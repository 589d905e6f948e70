"""Each camera's clock, read honestly and mapped onto the run's clock.

A frame popped from a circular buffer carries up to three times:

- the camera's own stamp: pairscope's demo cameras write ``ExposureStartTime-ms``
  (exposure start since their sequence started); a C++ camera that stamps its
  frames writes ``ElapsedTime-ms`` itself, with a fractional part;
- the core's stamps: MMCore adds ``ElapsedTime-ms`` (whole milliseconds) only
  where the camera did not, ``UniMMCore`` always overwrites it for Python cameras,
  and both add ``TimeReceivedByCore`` (local wall time, microseconds) when the
  frame enters the buffer;
- the host's: when pairscope popped it.

``timing_source`` says which one a frame's exposure window comes from: ``camera``
only when the camera stamped it, ``core`` for the core's receive time, ``host``
for pairscope's own clock.  A camera's clock is mapped onto the run clock through
the host time its sequence started, and the mapping is then *learned*: a frame
cannot reach the core before its exposure ended, so the lower envelope of
(receive time − stamped end) over recent frames is the camera clock's offset plus
the shortest transfer latency.  Pairing compares cameras on these learned
clocks, so a camera whose clock is off by any constant, or drifts, is still
compared with the other at the same instant; nothing assumes the offset is zero.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Literal

from ._timing import RunClock

# the demo cameras' own exposure-start stamp (ms since their sequence started)
EXPOSURE_START_KEY = "ExposureStartTime-ms"
ELAPSED_KEY = "ElapsedTime-ms"
RECEIVED_KEY = "TimeReceivedByCore"

TimingSource = Literal["camera", "core", "host"]
# the clock offset is tracked through the least receive latency of each block of
# BLOCK frames, over the last BLOCKS blocks (a few seconds at video rate)
BLOCK = 16
BLOCKS = 8


def camera_stamp(
    meta: dict[str, str], *, python_camera: bool
) -> tuple[float | None, bool]:
    """(the camera's own stamp in ms, whether it marks the exposure *start*).

    ``None`` where the camera did not stamp the frame: MMCore writes
    ``ElapsedTime-ms`` as whole milliseconds when the camera gave none, and
    ``UniMMCore`` writes it for every Python camera.
    """
    start = _float(meta.get(EXPOSURE_START_KEY))
    if start is not None:
        return start, True
    elapsed = meta.get(ELAPSED_KEY)
    if python_camera or elapsed is None or "." not in elapsed:
        return None, False
    return _float(elapsed), False


def received_ms(meta: dict[str, str], clock: RunClock) -> float | None:
    """When the core received the frame, on the run clock (``None``: not said)."""
    text = meta.get(RECEIVED_KEY)
    if not text:
        return None
    try:
        wall = datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None
    return clock.wall_to_ms(wall)


class CameraClock:
    """One camera's stamps mapped onto the run clock, the offset learned online.

    ``origin_ms`` is the run-clock time the camera's sequence started (its stamps
    count from there).  :meth:`observe` feeds (stamped exposure end, receive time);
    the residual receive − stamped end is the clock offset plus the transfer
    latency.  Its least value over each block of :data:`BLOCK` frames is the
    offset plus the shortest latency; a line through the last :data:`BLOCKS`
    block minima follows a clock that drifts (one period per 400 frames moves the
    offset 0.05 ms per frame), with no lag.
    """

    def __init__(self, origin_ms: float) -> None:
        self.origin_ms = origin_ms
        self.samples = 0
        self._block: list[tuple[float, float]] = []
        self._minima: deque[tuple[float, float]] = deque(maxlen=BLOCKS)
        self._line: tuple[float, float] | None = None  # (at, slope) in ms, ms/ms

    def end_on_run_clock(
        self, stamp_ms: float, *, is_start: bool, exposure_ms: float
    ) -> float:
        """The stamped exposure end on the run clock, before the learned offset."""
        return self.origin_ms + stamp_ms + (exposure_ms if is_start else 0.0)

    def observe(self, stamped_end_ms: float, received: float) -> None:
        self._block.append((stamped_end_ms, received - stamped_end_ms))
        self.samples += 1
        if len(self._block) >= BLOCK:
            t, r = min(self._block, key=lambda p: p[1])
            self._minima.append((t, r))
            self._block = []
            self._line = _fit(self._minima)

    def offset_at(self, stamped_end_ms: float) -> float:
        """Receive time − stamped end at its least, for a frame stamped then."""
        if self._line is None:
            points = list(self._minima) + self._block
            return min(r for _, r in points) if points else 0.0
        intercept, slope = self._line
        recent = min((r for _, r in self._block), default=None)
        fitted = intercept + slope * stamped_end_ms
        # a residual below the line is a real bound (receive >= end): take it
        return fitted if recent is None else min(fitted, recent)


def _fit(minima: deque[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares line through the block minima (None: too few to fit)."""
    if len(minima) < 3:
        return None
    ts = [t for t, _ in minima]
    rs = [r for _, r in minima]
    tm, rm = sum(ts) / len(ts), sum(rs) / len(rs)
    var = sum((t - tm) ** 2 for t in ts)
    if var <= 0:
        return None
    slope = sum((t - tm) * (r - rm) for t, r in zip(ts, rs, strict=True)) / var
    return rm - slope * tm, slope


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
