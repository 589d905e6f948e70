"""Simultaneous demo runs from the two-core demo rig, with scenario and camera drills."""

from __future__ import annotations

from pathlib import Path

import useq

from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.sim import configure_demo_rig as configure


def acquire_rig_run(
    out: Path, *, frames: int = 8, interval_s: float = 0.1, **kw
) -> Path:
    """A demo run of hardware-triggered sequences (the rig file's pairing, one
    trigger line for both cameras); ``kw`` as :func:`configure`."""
    with open_rig(demo_rig_path()) as rig:
        configure(rig, **kw)
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)  # triggered sequences
        summary = acq.run(
            useq.MDASequence(time_plan={"interval": interval_s, "loops": frames}),
            writer=RunWriter(out),
        )
    assert summary.status == "completed", summary
    assert summary.run_dir is not None
    return Path(summary.run_dir)
