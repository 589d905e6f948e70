"""Simultaneous demo runs for the benchmarks: the two-core demo rig (one core per
camera, one trigger line) with ``PairedAcquisition``, as a user acquires them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import useq

from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter


def acquire(
    out: Path,
    seed: int,
    *,
    frames: int,
    sensor: int = 512,
    binning: int = 2,
    scenario: str = "none",
    onset_pair: int = 0,
    props: Sequence[tuple[str, str, object]] = (),
) -> Path:
    """One run of ``frames`` triggered pairs; ``props`` as ``(device, property,
    value)`` on whichever core holds the device."""
    with open_rig(demo_rig_path()) as rig:
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
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)  # triggered sequences
        seq = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
        summary = acq.run(seq, writer=RunWriter(out))
    if summary.run_dir is None:
        raise SystemExit(f"the demo acquisition failed: {summary}")
    return Path(summary.run_dir)
