"""pairscope's engine under pymmcore-plus's own runner (``core.mda.run``).

A pymmcore-plus user sets :class:`~pairscope.acquire.PairedEngine` on the rig's
primary core and runs a ``useq`` sequence: cancel and pause work mid-burst, every
frame carries complete ``FrameMetaV1`` in its own ``(t, cam)`` slot, and a writer
that would lose frames is refused before the first one.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import useq

with warnings.catch_warnings():  # deprecated by pymmcore-plus, still shipped
    warnings.simplefilter("ignore", FutureWarning)
    from pymmcore_plus.mda.handlers import (
        ImageSequenceWriter,
        OMETiffWriter,
        TensorStoreHandler,
    )

from pairscope.acquire import Pair, PairedAcquisition, PairedEngine
from pairscope.config import AcquisitionSettings
from pairscope.errors import ConfigError
from pairscope.hardware import demo_rig_path, open_rig

CPP_RIG = Path(__file__).parents[1] / "hardware_configs" / "cpp_democamera_rig.yaml"


def _engine(rig: Any, pairs: list[Pair]) -> PairedEngine:
    acq = PairedAcquisition(rig, AcquisitionSettings(mode="triggered"))
    engine = PairedEngine(rig, acq.detectors, acq.settings, pairs.append)
    rig.primary.core.mda.set_engine(engine)
    return engine


def _check_frames(frames: list[tuple[dict, dict]]) -> None:
    """Complete FrameMetaV1, real runner times, one (t, cam) slot per frame."""
    slots = [(index["t"], index["cam"]) for index, _ in frames]
    assert len(slots) == len(set(slots)), "two frames in one (t, cam) slot"
    last = {0: -1.0, 1: -1.0}
    for index, meta in frames:
        assert meta["format"] == "frame-dict"
        assert meta["runner_time_ms"] > 0
        assert meta["runner_time_ms"] >= last[index["cam"]]
        last[index["cam"]] = meta["runner_time_ms"]
        assert meta["camera_metadata"]["Camera"] == meta["camera_device"]
        assert "ImageNumber" in meta["camera_metadata"]


def test_cancel_stops_a_burst_and_every_frame_is_delivered() -> None:
    pairs: list[Pair] = []
    frames: list[tuple[dict, dict]] = []
    with open_rig(CPP_RIG) as rig:
        core = rig.primary.core
        _engine(rig, pairs)

        def on_frame(img: Any, event: useq.MDAEvent, meta: dict) -> None:
            frames.append((dict(event.index), meta))
            if len(frames) == 40:
                core.mda.cancel()

        core.mda.events.frameReady.connect(on_frame)
        core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 400}))
        running = [rc.core.isSequenceRunning() for rc in rig.cores]
        reason = core.mda.status.finish_reason
    assert (
        str(reason.value if hasattr(reason, "value") else reason)
        .lower()
        .startswith("cancel")
    )
    assert 40 <= len(frames) < 400 and not any(running)
    frame = next(p.reference for p in pairs if p.reference is not None)
    assert frame.max() > 0 and float(frame.std()) > 10.0  # real pixels
    n_frames = sum((p.lowdose is not None) + (p.reference is not None) for p in pairs)
    assert n_frames == len(frames)  # every frame taken reached the runner
    _check_frames(frames)


def test_pause_holds_a_burst_and_resume_takes_the_rest() -> None:
    """Paused at the burst's first frame: the burst stops, the runner pauses at
    the event boundary, and on resume the rest of the timepoints are taken, each
    once.  (The pause state is read from the runner, not from its signals: with a
    QApplication alive pymmcore-plus uses Qt signals, queued across threads.)"""
    pairs: list[Pair] = []
    frames: list[tuple[dict, dict]] = []
    states: list[bool] = []
    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 64)
        core = rig.primary.core
        _engine(rig, pairs)

        def resume() -> None:
            deadline = time.monotonic() + 60  # a bound for a hang only
            while not core.mda.is_paused() and time.monotonic() < deadline:
                time.sleep(0.01)
            states.append(core.mda.is_paused())
            core.mda.set_paused(False)

        def on_frame(img: Any, event: useq.MDAEvent, meta: dict) -> None:
            frames.append((dict(event.index), meta))
            if len(frames) == 1:
                core.mda.set_paused(True)
                threading.Thread(target=resume, daemon=True).start()

        core.mda.events.frameReady.connect(on_frame)
        core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 100}))
    assert states == [True]  # the runner did pause
    low_t = sorted(index["t"] for index, _ in frames if index["cam"] == 0)
    assert low_t == list(range(100))  # every timepoint taken, once
    _check_frames(frames)


@pytest.mark.parametrize(
    "output",
    ["memory", "tiff", "tensorstore", "sequence"],  # OMEZarrWriter needs zarr
)
def test_writers_that_would_lose_frames_are_refused_before_the_first(
    tmp_path: Path, output: str
) -> None:
    handlers = {
        "memory": lambda: "memory://",
        "tiff": lambda: OMETiffWriter(tmp_path / "x.ome.tif"),
        "tensorstore": lambda: TensorStoreHandler(path=tmp_path / "ts"),
        "sequence": lambda: ImageSequenceWriter(tmp_path / "seq"),
    }
    pairs: list[Pair] = []
    with open_rig(CPP_RIG) as rig:
        _engine(rig, pairs)
        with pytest.raises(ConfigError, match="no camera axis"):
            rig.primary.core.mda.run(
                useq.MDASequence(time_plan={"interval": 0, "loops": 5}),
                output=handlers[output](),
            )
    assert pairs == []  # refused before any frame


class _Abort(BaseException):
    """What a Ctrl-C (or any error the engine does not catch) looks like."""


def test_an_error_through_the_runner_stops_both_sequences_and_keeps_every_frame() -> (
    None
):
    """An error raised mid-burst (here by the pair consumer, once) goes through
    pymmcore-plus's runner: both sequences stop, the shutter closes, and every
    frame taken is still delivered."""
    pairs: list[Pair] = []
    with open_rig(CPP_RIG) as rig:
        core = rig.primary.core
        acq = PairedAcquisition(rig, AcquisitionSettings(mode="triggered"))

        def deliver(pair: Pair) -> None:
            pairs.append(pair)
            if len(pairs) == 15:
                raise _Abort

        core.mda.set_engine(PairedEngine(rig, acq.detectors, acq.settings, deliver))
        with pytest.raises(_Abort):
            core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 400}))
        running = [rc.core.isSequenceRunning() for rc in rig.cores]
        shutter_open = core.getShutterOpen()
    assert not any(running) and not shutter_open
    assert 15 < len(pairs) < 400  # the frames after the error were delivered too
    numbers = [
        p.metadata["lowdose"]["camera_image_number"]
        for p in pairs
        if p.metadata.get("lowdose")
    ]
    assert numbers == sorted(set(numbers))  # each low-dose frame once, in order
