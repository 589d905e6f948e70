"""Hardware-timed sequences on every core, paired by what the cameras report.

Each core runs ``startSequenceAcquisition`` on its camera (followers in external
trigger mode first, the leader last).  Frames are popped from each core's circular
buffer with their metadata, and paired in order of each camera's own
``ImageNumber``; each pairing is checked against the cameras' own timestamps
(``ElapsedTime-ms``, mapped onto the run clock through the host time the core's
sequence started).  Exposure starts that disagree by more than half the shorter
exposure, by a whole number of frame periods, are a missed trigger: the frame that
lost its partner is kept alone and the pairing resynchronises; so is any frame
whose exposure matches no exposure of the other camera (a follower that
free-runs because its trigger cable is unplugged).  Frames whose starts differ by
less than half a period stay paired (timestamps taken late under load are not a
missed trigger); whether they were simultaneous is still judged from the windows.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from pymmcore_plus import CMMCorePlus

from ..errors import CameraFault, SequenceOverflow
from ._timing import FrameRecord, RunClock, camera_window, image_metadata, int_or_none

# a camera that timestamps its exposure start (ms since its sequence started) says
# so under this key (pairscope's demo cameras do); else ElapsedTime-ms is used,
# which the core takes when the frame arrives (after the exposure and readout)
EXPOSURE_START_KEY = "ExposureStartTime-ms"


@dataclass(slots=True)
class SeqFrame:
    """One frame popped from a circular buffer."""

    role: str  # "lowdose" | "reference"
    image: np.ndarray
    record: FrameRecord
    number: int  # position in this camera's stream (0, 1, ...)
    start_ms: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CameraStream:
    """One camera of a sequence: where its frames come from and what it said."""

    core: CMMCorePlus
    core_name: str
    label: str
    role: str
    exposure_ms: float
    t_start: float = 0.0  # host perf_counter when its sequence started
    received: int = 0
    last_frame_at: float = 0.0
    last_image_number: int | None = None
    gaps: int = 0


def start_sequence(core: CMMCorePlus, label: str, n: int, interval_ms: float) -> float:
    """Start a sequence of ``n`` frames on ``label``; returns the host start time.

    Work-around (pymmcore-plus 0.18.1): ``UniMMCore`` does not pass the interval
    to Python cameras; a Python camera with ``set_sequence_interval_ms`` gets it.
    """
    pydevices = getattr(core, "_pydevices", None)
    if pydevices is not None and label in pydevices:
        with pydevices[label] as device:  # the core's own device lock
            setter = getattr(device, "set_sequence_interval_ms", None)
            if setter is not None:
                setter(interval_ms)
    core.startSequenceAcquisition(label, n, interval_ms, True)
    return time.perf_counter()


def drain(
    core: CMMCorePlus, streams: dict[str, CameraStream], clock: RunClock
) -> list[SeqFrame]:
    """Pop every frame waiting in ``core``'s circular buffer."""
    frames = []
    while core.getRemainingImageCount() > 0:
        image, md = core.popNextImageAndMD()
        meta = image_metadata(md)
        label = meta.get("Camera", "")
        stream = streams.get(label) or next(iter(streams.values()))
        number = int_or_none(meta.get("ImageNumber"))
        elapsed = _float(meta.get("ElapsedTime-ms"))
        started = _float(meta.get(EXPOSURE_START_KEY))
        if started is not None:  # the camera's own exposure-start timestamp
            t0 = clock.ms(stream.t_start) + started
            window = [round(t0, 3), round(t0 + stream.exposure_ms, 3)]
            source = "camera"
        elif elapsed is None:
            window = [round(clock.ms() - stream.exposure_ms, 3), round(clock.ms(), 3)]
            source = "host"
        else:
            window = camera_window(clock, stream.t_start, elapsed, stream.exposure_ms)
            source = "camera"
        if (
            number is not None
            and stream.last_image_number is not None
            and number != stream.last_image_number + 1
        ):
            stream.gaps += 1
        stream.last_image_number = number
        record = FrameRecord(
            camera=stream.label,
            core=stream.core_name,
            camera_image_number=number,
            exposure_window_ms=window,
            timing_source=source,
            exposure_ms=stream.exposure_ms,
        )
        trigger = int_or_none(meta.get("TriggerIndex"))
        if trigger is not None:
            record["camera_trigger_index"] = trigger
        frames.append(
            SeqFrame(stream.role, image, record, stream.received, window[0], meta)
        )
        stream.received += 1
        stream.last_frame_at = time.perf_counter()
    if core.isBufferOverflowed():
        raise SequenceOverflow(
            f"The circular buffer of core {next(iter(streams.values())).core_name!r} "
            "overflowed: frames arrived faster than pairscope could take them. "
            "Every pair taken before is saved. Give it more memory (--buffer-mb), "
            "a faster disk, or a longer interval."
        )
    return frames


class SequencePairer:
    """Pairs low-dose and reference frames by number, checked by their timestamps."""

    def __init__(self, tolerance_ms: float, period_ms: float) -> None:
        self.tolerance_ms = tolerance_ms
        self.period_ms = period_ms
        self.low: deque[SeqFrame] = deque()
        self.ref: deque[SeqFrame] = deque()
        self._offsets: deque[float] = deque([0.0], maxlen=16)
        self.missed = {"lowdose": 0, "reference": 0}

    def _whole_periods(self, d: float) -> bool:
        if self.period_ms <= 0:
            return False
        k = round(d / self.period_ms)
        return k != 0 and abs(d - k * self.period_ms) <= self.tolerance_ms

    def add(self, frame: SeqFrame) -> None:
        (self.low if frame.role == "lowdose" else self.ref).append(frame)

    def pairs(
        self, *, final: bool = False
    ) -> Iterator[tuple[SeqFrame | None, SeqFrame | None, str]]:
        """(low, ref, problem) for every frame that can be decided now."""
        while self.low and self.ref:
            low, ref = self.low[0], self.ref[0]
            d = ref.start_ms - low.start_ms - statistics.median(self._offsets)
            if (
                _overlap_after_shift(low, ref, d) >= self.tolerance_ms
                or abs(d)
                < 0.5 * self.period_ms  # late timestamps, not a missed trigger
            ):
                self.low.popleft()
                self.ref.popleft()
                self._offsets.append(ref.start_ms - low.start_ms)
                yield low, ref, ""
                continue
            missed = "missed this trigger" if self._whole_periods(d) else "has no frame"
            if d > 0:  # the reference frame belongs to a later instant
                self.low.popleft()
                self.missed["reference"] += 1
                yield (
                    low,
                    None,
                    (
                        f"reference camera {missed} of this instant (its next frame "
                        f"started {d:.1f} ms later); pairing resynchronised"
                    ),
                )
            else:
                self.ref.popleft()
                self.missed["lowdose"] += 1
                yield (
                    None,
                    ref,
                    (
                        f"low-dose camera {missed} of this instant (its next frame "
                        f"started {-d:.1f} ms later); pairing resynchronised"
                    ),
                )
        if final:
            while self.low:
                self.missed["reference"] += 1
                yield self.low.popleft(), None, "reference frame never arrived"
            while self.ref:
                self.missed["lowdose"] += 1
                yield None, self.ref.popleft(), "low-dose frame never arrived"


@contextmanager
def camera_thread_errors() -> Iterator[dict[str, BaseException]]:
    """Errors raised by Python cameras' sequence threads, by camera label.

    Work-around (pymmcore-plus 0.18.1): ``UniMMCore`` runs a Python camera's
    sequence in a thread that re-raises the camera's error into
    ``threading.excepthook`` (a traceback on stderr) and the core just stops
    delivering.  Here the error is caught, kept for the engine to report as a
    camera fault, and not printed.
    """
    errors: dict[str, BaseException] = {}
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        label = getattr(args.thread, "label", None)
        if type(args.thread).__name__ == "AcquisitionThread" and label:
            cause = args.exc_value.__cause__ if args.exc_value is not None else None
            errors[str(label)] = cause or args.exc_value or RuntimeError("failed")
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield errors
    finally:
        threading.excepthook = previous


def check_hang(
    streams: list[CameraStream],
    expected: int,
    timeout_s: float,
    trigger: int,
    owed_at_most: int = 0,
) -> None:
    """CameraFault if a camera that owes more than ``owed_at_most`` frames has been
    silent for longer than ``timeout_s``."""
    now = time.perf_counter()
    for s in sorted(streams, key=lambda s: s.last_frame_at):
        silent = now - s.last_frame_at
        if expected - s.received > owed_at_most and silent > timeout_s:
            raise CameraFault(
                f"Camera {s.label!r} (core {s.core_name!r}) stopped delivering: no "
                f"frame for {silent:.1f} s after {s.received} of {expected} frames. "
                "Every earlier pair is saved; check the camera (cable, power, "
                "driver) and start a new run.",
                trigger_index=trigger,
                camera=s.label,
            )


def _overlap_after_shift(low: SeqFrame, ref: SeqFrame, d: float) -> float:
    """How long the exposures overlap once the cameras' clock offset is removed."""
    low_len = low.record["exposure_ms"]
    ref_len = ref.record["exposure_ms"]
    return max(0.0, min(low_len, d + ref_len) - max(0.0, d))


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
