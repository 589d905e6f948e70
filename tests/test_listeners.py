"""No listener can cost a pair: the writer is fed first, listeners are isolated."""

from __future__ import annotations

from pathlib import Path

import useq

import pairscope
from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter


def test_raising_listeners_cost_no_pair_and_are_counted(tmp_path: Path) -> None:
    seen: list[int] = []

    def broken(pair: object) -> None:
        raise BrokenPipeError("stderr closed")  # e.g. a progress bar piped to head

    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 64)
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)
        acq.events.pairReady.connect(broken)  # connected before the others
        acq.events.pairReady.connect(lambda p: seen.append(p.index))
        summary = acq.run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 10}),
            writer=RunWriter(tmp_path),
        )
    assert summary.status == "completed" and summary.pairs == 10
    assert len(pairscope.open_run(summary.run_dir)) == 10  # the writer got all
    assert seen == list(range(10))  # later listeners too
    failures = summary.listener_failures or {}
    assert sum(failures.values()) == 3  # disconnected after 3 failures
    assert any("broken" in name for name in failures)
