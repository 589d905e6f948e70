"""Pair two cameras' frame streams by when each exposure happened.

Every frame is placed on the run clock by its camera's learned clock
(:class:`~pairscope.acquire._clocks.CameraClock`); a low-dose and a reference frame
are paired when each is the other's nearest exposure (mutual nearest
neighbours) and their exposures overlap.  That one rule covers every case a rig
produces:

- hardware-triggered cameras: the partner of the same trigger is nearest, at any
  constant or drifting clock offset (learned, never assumed);
- a missed trigger or a frame lost in transfer: the frame whose partner is
  missing has a nearer claimant on the other side, so it is kept alone and marked;
- free-running cameras (no trigger wiring): the nearest exposure is taken, and
  ``simultaneous`` says whether the two overlapped by at least half the shorter
  exposure.

A decision waits only until it cannot change: a camera's exposures never overlap
each other, so a partner that overlaps by more than half the camera's exposure
cannot be beaten by that camera's next frame; otherwise the next frame (or the end
of the stream) decides.  Image numbers are checked, not trusted: MMCore numbers
frames as they arrive, so a lost frame leaves no gap there; a change in the
offset between the two cameras' numbers is counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ._clocks import CameraClock, TimingSource
from ._timing import FrameRecord

ROLES = ("lowdose", "reference")
# frames each camera delivers before the first pairing decision: the clock
# offsets are learned from their receive times first
SETTLE_FRAMES = 8


@dataclass(slots=True)
class StreamFrame:
    """One frame of a camera's stream, with what its camera and core said."""

    role: str  # "lowdose" | "reference"
    image: np.ndarray | None
    record: FrameRecord
    number: int  # position in this camera's stream (0, 1, ...)
    exposure_ms: float
    end_ms: float  # stamped exposure end on the run clock (before the learned offset)
    received_ms: float  # when the core (or pairscope) received it, run clock
    source: TimingSource
    metadata: dict[str, str] = field(default_factory=dict)


class FramePairer:
    """Mutual-nearest pairing of two streams on learned camera clocks."""

    def __init__(self, clocks: dict[str, CameraClock]) -> None:
        self.clocks = clocks
        self.queues: dict[str, deque[StreamFrame]] = {r: deque() for r in ROLES}
        self.ended = dict.fromkeys(ROLES, False)
        self.alone = dict.fromkeys(ROLES, 0)
        self.paired = 0
        self.number_jumps = 0
        self._number_offset: int | None = None

    # -- input ---------------------------------------------------------------------
    def add(self, frame: StreamFrame) -> None:
        if frame.source == "camera":
            self.clocks[frame.role].observe(frame.end_ms, frame.received_ms)
        self.queues[frame.role].append(frame)

    def end(self, role: str) -> None:
        """No more frames will come from ``role``'s camera."""
        self.ended[role] = True

    # -- the learned clocks ------------------------------------------------------------
    def window(self, frame: StreamFrame) -> tuple[float, float]:
        """The exposure on the run clock: the camera's stamps shifted by its learned
        offset relative to the low-dose camera's (whose stamps stay as they are)."""
        end = frame.end_ms
        if frame.source == "camera":
            end += self.clocks[frame.role].offset_at(end) - self._low_offset(end)
        elif self.clocks["lowdose"].samples:  # receive times vs stamped low-dose
            end -= self._low_offset(end)
        return end - frame.exposure_ms, end

    def _low_offset(self, at_ms: float) -> float:
        return self.clocks["lowdose"].offset_at(at_ms)

    def _settled(self) -> bool:
        return all(
            self.ended[r]
            or len(self.queues[r]) >= SETTLE_FRAMES
            or self.clocks[r].samples >= SETTLE_FRAMES
            or (self.queues[r] and self.queues[r][0].source != "camera")
            for r in ROLES
        )

    # -- decisions ---------------------------------------------------------------------
    def pairs(
        self, *, final: bool = False
    ) -> Iterator[tuple[StreamFrame | None, StreamFrame | None, str]]:
        """(low, ref, problem) for every frame whose partner is decided."""
        if final:
            for r in ROLES:
                self.ended[r] = True
        if not self._settled():
            return
        low_q, ref_q = self.queues["lowdose"], self.queues["reference"]
        while low_q and ref_q:
            decision = self._decide(low_q, ref_q)
            if decision is None:
                return  # the next frame decides
            yield decision
        for role in ROLES:
            if self.ended[_other(role)] or final:
                while self.queues[role]:
                    yield self._alone(
                        self.queues[role].popleft(),
                        f"the {_name(_other(role))} camera delivered no frame of "
                        "this instant",
                    )

    def _decide(
        self, low_q: deque[StreamFrame], ref_q: deque[StreamFrame]
    ) -> tuple[StreamFrame | None, StreamFrame | None, str] | None:
        low, ref = low_q[0], ref_q[0]
        (l0, l1), (r0, r1) = self.window(low), self.window(ref)
        d = (r0 + r1) / 2 - (l0 + l1) / 2
        # the later of the two is the earlier one's nearest remaining frame; is the
        # earlier one also the later one's nearest?
        first_q, first = (low_q, low) if d >= 0 else (ref_q, ref)
        second = ref if d >= 0 else low
        nearest = self._is_nearest(first_q, first, second, abs(d))
        if nearest is None:
            return None
        if nearest and min(l1, r1) - max(l0, r0) > 0:
            low_q.popleft()
            ref_q.popleft()
            return self._pair(low, ref)
        first_q.popleft()  # the earlier frame has no partner of its instant
        other = _name(_other(first.role))
        return self._alone(
            first,
            f"the {other} camera missed this instant (its nearest frame is "
            f"{abs(d):.1f} ms away and belongs to another)",
        )

    def _is_nearest(
        self,
        queue: deque[StreamFrame],
        frame: StreamFrame,
        partner: StreamFrame,
        distance: float,
    ) -> bool | None:
        """Is ``frame`` the nearest of its stream to ``partner`` (None: not yet known)?"""
        if len(queue) > 1:
            n0, n1 = self.window(queue[1])
            p0, p1 = self.window(partner)
            return abs((n0 + n1) / 2 - (p0 + p1) / 2) >= distance
        if self.ended[frame.role]:
            return True
        # the camera's next exposure starts after this one ends
        return True if distance <= frame.exposure_ms / 2 else None

    def _pair(
        self, low: StreamFrame, ref: StreamFrame
    ) -> tuple[StreamFrame, StreamFrame, str]:
        self._stamp(low)
        self._stamp(ref)
        self.paired += 1
        a, b = (
            low.record.get("camera_image_number"),
            ref.record.get("camera_image_number"),
        )
        if a is not None and b is not None:
            if self._number_offset is not None and b - a != self._number_offset:
                self.number_jumps += 1
            self._number_offset = b - a
        return low, ref, ""

    def _alone(
        self, frame: StreamFrame, problem: str
    ) -> tuple[StreamFrame | None, StreamFrame | None, str]:
        self._stamp(frame)
        self.alone[frame.role] += 1
        if frame.role == "lowdose":
            return frame, None, problem
        return None, frame, problem

    def _stamp(self, frame: StreamFrame) -> None:
        start, end = self.window(frame)
        frame.record["exposure_window_ms"] = [round(start, 3), round(end, 3)]


def _other(role: str) -> str:
    return "reference" if role == "lowdose" else "lowdose"


def _name(role: str) -> str:
    return "low-dose" if role == "lowdose" else "reference"
