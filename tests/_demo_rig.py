"""Simultaneous demo runs from the two-core demo rig, with scenario and camera drills."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import useq

from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter


def configure(
    rig,
    *,
    seed: int,
    sensor: int = 256,
    binning: int = 2,
    scenario: str = "none",
    onset_pair: int = 0,
    props: Sequence[tuple[str, str, object]] = (),
) -> None:
    """Seed, sensor size, binning, scenario and any ``(device, property, value)``."""
    hub = rig.core_of("LowDoseCam").core
    hub.setProperty("DemoHub", "Seed", seed)
    for cam in ("LowDoseCam", "ReferenceCam"):
        rig.core_of(cam).core.setProperty(cam, "SensorSize", sensor)
    hub.setProperty("LowDoseCam", "Binning", binning)
    spt = float(hub.getProperty("DemoHub", "SpecimenSecondsPerTrigger"))
    hub.setProperty("DemoHub", "Scenario", scenario)
    hub.setProperty("DemoHub", "ScenarioOnset_s", onset_pair * spt)
    for device, prop, value in props:
        core = rig.core_of(device).core if device.endswith("Cam") else hub
        core.setProperty(device, prop, value)


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
