"""The pairer on synthetic frame streams with real-clock troubles.

The demo's cameras share one clock, so these streams supply what real cameras do:
camera clocks offset by any constant or drifting, frames reaching the host after a
random latency, triggers a camera missed, frames lost in transfer, and a follower
free-running beside the leader.  Each frame carries its true instant, so every
pairing decision is checked against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pairscope.acquire import audit_pairing
from pairscope.acquire._clocks import CameraClock, camera_stamp, received_ms
from pairscope.acquire._pairing import FramePairer, StreamFrame
from pairscope.acquire._timing import FrameRecord, RunClock, simultaneous

PERIOD = 20.0  # ms between triggers
EXPOSURE = 16.0


@dataclass
class Streams:
    """Frames of both cameras in the order they reach the host."""

    frames: list[StreamFrame]
    both: set[int]  # instants both cameras exposed (triggered streams)


def _frame(
    role: str,
    k: int,
    number: int,
    start: float,
    exposure: float,
    stamp: float,
    latency: float,
) -> StreamFrame:
    rec = FrameRecord(
        camera=role,
        camera_image_number=number,
        exposure_ms=exposure,
        camera_trigger_index=k,
        timing_source="camera",
    )
    rec["true_window"] = [start, start + exposure]  # type: ignore[typeddict-unknown-key]
    return StreamFrame(
        role,
        None,
        rec,
        number,
        exposure,
        stamp + exposure,
        start + exposure + latency,
        "camera",
    )


def triggered(
    n: int = 400,
    *,
    offset_periods: float = 0.0,
    drift_periods_per_400: float = 0.0,
    missed: frozenset[int] = frozenset(),
    lost_low: frozenset[int] = frozenset(),
    seed: int = 0,
) -> Streams:
    """Both cameras on one trigger line; the reference camera's clock is offset by
    ``offset_periods`` and runs fast by ``drift_periods_per_400``; it misses the
    triggers in ``missed``; the low-dose frames in ``lost_low`` are lost."""
    rng = np.random.default_rng(seed)
    rate = 1.0 + drift_periods_per_400 / 400.0
    frames: list[StreamFrame] = []
    counts = {"lowdose": 0, "reference": 0}
    both = set()
    for k in range(n):
        t = k * PERIOD
        for role in ("lowdose", "reference"):
            if (role == "reference" and k in missed) or (
                role == "lowdose" and k in lost_low
            ):
                continue
            stamp = t if role == "lowdose" else t * rate + offset_periods * PERIOD
            frames.append(
                _frame(
                    role,
                    k,
                    counts[role],
                    t,
                    EXPOSURE,
                    stamp,
                    float(rng.uniform(0.2, 4.0)),
                )
            )
            counts[role] += 1
        if k not in missed and k not in lost_low:
            both.add(k)
    frames.sort(key=lambda f: f.received_ms)
    return Streams(frames, both)


def pair_all(
    streams: Streams,
) -> list[tuple[StreamFrame | None, StreamFrame | None, str]]:
    """Feed the frames as they arrive, deciding after each, as the engine does."""
    pairer = FramePairer({"lowdose": CameraClock(0.0), "reference": CameraClock(0.0)})
    out = []
    for frame in streams.frames:
        pairer.add(frame)
        out.extend(pairer.pairs())
    out.extend(pairer.pairs(final=True))
    return out


def _k(frame: StreamFrame | None) -> int | None:
    return None if frame is None else frame.record["camera_trigger_index"]


def _check_triggered(streams: Streams) -> None:
    decisions = pair_all(streams)
    pairs = [(lo, re) for lo, re, _ in decisions if lo is not None and re is not None]
    wrong = [(_k(lo), _k(re)) for lo, re in pairs if _k(lo) != _k(re)]
    assert not wrong, f"{len(wrong)} frames paired with a neighbour: {wrong[:5]}"
    assert {_k(lo) for lo, _ in pairs} == streams.both  # every partner paired
    n_frames = sum(1 for lo, re, _ in decisions for f in (lo, re) if f is not None)
    assert n_frames == len(streams.frames)  # nothing dropped, nothing twice
    for lo, re in pairs:  # and the learned clocks label them simultaneous
        assert simultaneous(lo.record, re.record)
    for lo, re, problem in decisions:
        if lo is None or re is None:
            assert "missed this instant" in problem or "no frame" in problem


@pytest.mark.parametrize("offset", [0.0, 0.5, 1.0, 2.0, -0.5, 3.7])
def test_any_constant_clock_offset_pairs_each_frame_with_its_own_partner(
    offset: float,
) -> None:
    _check_triggered(triggered(offset_periods=offset))


@pytest.mark.parametrize("drift", [1.0, -1.0])
@pytest.mark.parametrize("offset", [0.0, 0.5, 1.0])
def test_a_drifting_clock_is_tracked(offset: float, drift: float) -> None:
    """One period of drift per 400 frames either way, over 1200 frames (three
    periods): an offset learned once, or never forgotten, would lose it."""
    _check_triggered(
        triggered(1200, offset_periods=offset, drift_periods_per_400=drift)
    )


@pytest.mark.parametrize("offset", [0.0, 0.5, 1.0, 2.0])
def test_missed_triggers_and_lost_frames_leave_the_frame_alone(offset: float) -> None:
    streams = triggered(
        offset_periods=offset,
        drift_periods_per_400=0.5,
        missed=frozenset({3, 4, 50, 51, 52, 200, 399}),
        lost_low=frozenset({0, 100, 101, 250}),
        seed=3,
    )
    _check_triggered(streams)
    decisions = pair_all(streams)
    alone = sorted(
        _k(lo if lo is not None else re)
        for lo, re, _ in decisions
        if lo is None or re is None
    )
    assert alone == [0, 3, 4, 50, 51, 52, 100, 101, 200, 250, 399]


def test_the_first_frames_of_one_camera_missing_do_not_shift_the_pairing() -> None:
    """The reference camera armed late: its first three triggers are lost, and
    its image numbers still start at 0 (the core numbers frames as they come)."""
    _check_triggered(triggered(offset_periods=1.0, missed=frozenset({0, 1, 2})))


def test_free_running_cameras_take_the_nearest_exposure_labelled_by_overlap() -> None:
    """No trigger wiring: the follower runs at its own period, its phase sliding
    through the leader's; its clock is offset by 1.5 periods."""
    rng = np.random.default_rng(7)
    frames: list[StreamFrame] = []
    for k in range(600):
        t = k * PERIOD
        frames.append(
            _frame("lowdose", k, k, t, EXPOSURE, t, float(rng.uniform(0.2, 4)))
        )
    ref_period = PERIOD * 1.004  # drifts one period per 250 frames
    for j in range(598):
        t = 3.0 + j * ref_period
        frames.append(
            _frame(
                "reference",
                -1,
                j,
                t,
                EXPOSURE,
                t + 1.5 * PERIOD,
                float(rng.uniform(0.2, 4)),
            )
        )
    frames.sort(key=lambda f: f.received_ms)
    decisions = pair_all(Streams(frames, set()))
    pairs = [(lo, re) for lo, re, _ in decisions if lo is not None and re is not None]
    # the truth: which reference exposure overlaps each low-dose one most
    true = [tuple(f.record["true_window"]) for f in frames]  # type: ignore[typeddict-item]
    lows = sorted(w for f, w in zip(frames, true, strict=True) if f.role == "lowdose")
    refs = sorted(w for f, w in zip(frames, true, strict=True) if f.role == "reference")
    existed = _same_instant_partners(lows, refs)
    formed = 0
    for lo, re in pairs:
        a, b = lo.record["true_window"], re.record["true_window"]  # type: ignore[typeddict-item]
        overlap = min(a[1], b[1]) - max(a[0], b[0])
        assert overlap > 0  # never a neighbour: the exposures overlap
        truly = overlap >= 0.5 * EXPOSURE
        formed += truly
        if abs(overlap - 0.5 * EXPOSURE) > 0.5:  # the label says what happened
            assert simultaneous(lo.record, re.record) == truly
    assert formed == existed and existed > 400


def _same_instant_partners(
    lows: list[tuple[float, float]], refs: list[tuple[float, float]]
) -> int:
    j = n = 0
    for a in lows:
        while j < len(refs) and refs[j][1] < a[0]:
            j += 1
        if j < len(refs):
            b = refs[j]
            if min(a[1], b[1]) - max(a[0], b[0]) >= 0.5 * EXPOSURE:
                n, j = n + 1, j + 1
    return n


def test_the_audit_counts_partners_that_existed_and_those_paired() -> None:
    def rec(end: float | None, end2: float | None) -> dict:
        f = lambda e: None if e is None else {"received_ms": e, "exposure_ms": 10.0}  # noqa: E731
        return {"lowdose": f(end), "reference": f(end2)}

    records = [
        rec(10, 11),  # paired, same instant
        rec(20, None),  # its partner came alone next: a missed pairing
        rec(None, 21),
        rec(30, 37),  # paired, overlap 3 of 10 ms: not the same instant
        rec(50, None),  # no partner existed
    ]
    audit = audit_pairing(records)
    assert (audit.partners_existed, audit.partners_paired, audit.other_pairs) == (
        2,
        1,
        1,
    )
    assert audit.ratio == 0.5


@pytest.mark.parametrize(
    ("meta", "python_camera", "expected"),
    [
        (
            {"ExposureStartTime-ms": "12.5", "ElapsedTime-ms": "30.00"},
            True,
            (12.5, True),
        ),
        ({"ElapsedTime-ms": "21.84"}, False, (21.84, False)),  # a C++ camera stamped it
        ({"ElapsedTime-ms": "22"}, False, (None, False)),  # MMCore's whole-ms stamp
        ({"ElapsedTime-ms": "21.84"}, True, (None, False)),  # UniMMCore's own stamp
        ({}, False, (None, False)),
    ],
)
def test_whose_timestamp_it_is(
    meta: dict, python_camera: bool, expected: tuple
) -> None:
    assert camera_stamp(meta, python_camera=python_camera) == expected


def test_the_core_receive_time_is_placed_on_the_run_clock() -> None:
    import time
    from datetime import datetime

    clock = RunClock()
    now = datetime.now().isoformat(sep=" ")
    got = received_ms({"TimeReceivedByCore": now}, clock)
    assert got is not None and abs(got - clock.ms()) < 1000  # a bound for a hang only
    assert received_ms({"TimeReceivedByCore": "not a time"}, clock) is None
    time.sleep(0)


def test_the_trigger_both_cameras_report_decides_the_same_instant() -> None:
    """Where both cameras say which trigger they read, that decides (a busy
    machine's learned clocks may put their windows apart); else the windows do."""
    from pairscope.acquire._engine import _same_instant

    def frame(window: tuple[float, float], trigger: int | None) -> dict:
        rec = {"exposure_window_ms": list(window), "exposure_ms": window[1] - window[0]}
        if trigger is not None:
            rec["camera_trigger_index"] = trigger
        return rec

    apart, together = ((0.0, 20.0), (40.0, 90.0)), ((0.0, 20.0), (1.0, 51.0))
    assert _same_instant(frame(apart[0], 7), frame(apart[1], 7))  # type: ignore[arg-type]
    assert not _same_instant(frame(together[0], 7), frame(together[1], 8))  # type: ignore[arg-type]
    assert _same_instant(frame(together[0], None), frame(together[1], 8))  # type: ignore[arg-type]
    assert not _same_instant(frame(apart[0], 7), frame(apart[1], None))  # type: ignore[arg-type]
