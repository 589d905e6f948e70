"""Hardware-timed sequences on every core: start them, take their frames.

Each core runs ``startSequenceAcquisition`` on its camera (followers in external
trigger mode first, the leader last).  Frames are popped from each core's circular
buffer with what the camera and the core said about them (``_clocks``) and handed
to the pairer (``_pairing``).  A camera that stops delivering is told apart from a
busy machine by the other camera: see :func:`stopped_camera`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from pymmcore_plus import CMMCorePlus

from ..errors import SequenceOverflow
from ._clocks import CameraClock, TimingSource, camera_stamp, received_ms
from ._pairing import StreamFrame
from ._timing import FrameRecord, RunClock, image_metadata, int_or_none

# how much longer than five frame periods a camera may lag the other before it
# counts as stopped (measured: 0.3 s lags of a Python camera on 2 busy cores,
# 2.4 s at a load average of 8-10 on 2 cores, and 7.8 s with two CPU-bound
# processes and a fine-tuning process beside the run)
STOP_MARGIN_S = 12.0


@dataclass(slots=True)
class CameraStream:
    """One camera of a sequence: where its frames come from and what it said."""

    core: CMMCorePlus
    core_name: str
    label: str
    role: str
    exposure_ms: float
    python_camera: bool = False
    t_start: float = 0.0  # host perf_counter when its sequence started
    received: int = 0
    last_frame_at: float = 0.0
    last_image_number: int | None = None
    gaps: int = 0
    clock: CameraClock = field(default_factory=lambda: CameraClock(0.0))


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
) -> list[StreamFrame]:
    """Pop every frame waiting in ``core``'s circular buffer."""
    frames = []
    while core.getRemainingImageCount() > 0:
        image, md = core.popNextImageAndMD()
        popped = clock.ms()
        meta = image_metadata(md)
        stream = streams.get(meta.get("Camera", "")) or next(iter(streams.values()))
        frames.append(_frame(stream, image, meta, popped, clock))
    if core.isBufferOverflowed():
        raise SequenceOverflow(
            f"The circular buffer of core {next(iter(streams.values())).core_name!r} "
            "overflowed: frames arrived faster than pairscope could take them. "
            "Every pair taken before is saved. Give it more memory (--buffer-mb), "
            "a faster disk, or a longer interval."
        )
    return frames


def _frame(
    stream: CameraStream,
    image: np.ndarray,
    meta: dict[str, str],
    popped_ms: float,
    clock: RunClock,
) -> StreamFrame:
    """A popped frame with its exposure placed by the best clock that stamped it."""
    number = int_or_none(meta.get("ImageNumber"))
    stamp, is_start = camera_stamp(meta, python_camera=stream.python_camera)
    core_ms = received_ms(meta, clock)
    received = popped_ms if core_ms is None else min(core_ms, popped_ms)
    exposure = stream.exposure_ms
    if stamp is not None:
        end = stream.clock.end_on_run_clock(
            stamp, is_start=is_start, exposure_ms=exposure
        )
        source: TimingSource = "camera"
    else:
        end, source = received, ("host" if core_ms is None else "core")
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
        exposure_window_ms=[round(end - exposure, 3), round(end, 3)],
        timing_source=source,
        exposure_ms=exposure,
        received_ms=round(received, 3),
    )
    if stamp is not None:
        record["camera_timestamp_ms"] = stamp
    trigger = int_or_none(meta.get("TriggerIndex"))
    if trigger is not None:
        record["camera_trigger_index"] = trigger
    frame = StreamFrame(
        stream.role,
        image,
        record,
        stream.received,
        exposure,
        end,
        received,
        source,
        meta,
    )
    stream.received += 1
    stream.last_frame_at = time.perf_counter()
    return frame


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


def stopped_camera(
    streams: list[CameraStream], expected: int, period_ms: float, timeout_s: float
) -> CameraStream | None:
    """The camera that stopped delivering, if one did.

    A camera owing frames has stopped when another camera delivered a frame more
    than five frame periods plus :data:`STOP_MARGIN_S` after its last one: a busy
    machine delays both cameras' frames alike (they are popped in the same loop),
    and the margin covers a camera driver thread starved for a while on 2 loaded
    cores (the demo's cameras are Python threads).  Where every camera is silent
    (a stalled machine, or all of them hung), ``timeout_s`` decides.
    """
    now = time.perf_counter()
    grace = 5 * period_ms / 1000.0 + STOP_MARGIN_S
    for s in sorted(streams, key=lambda s: s.last_frame_at):
        if s.received >= expected:
            continue
        others = [o for o in streams if o is not s]
        if any(o.last_frame_at - s.last_frame_at > grace for o in others):
            return s
        if now - max(o.last_frame_at for o in streams) > timeout_s:
            return s
    return None


def camera_stopped_message(s: CameraStream, expected: int, silent_s: float) -> str:
    return (
        f"Camera {s.label!r} (core {s.core_name!r}) stopped delivering: no frame "
        f"for {silent_s:.1f} s after {s.received} of {expected} frames. Every frame "
        "acquired is saved (the other camera's frames alone, marked "
        "partner_missing); check the camera (cable, power, driver) and start a "
        "new run."
    )
