"""Setting up the demo rig for one run: specimen seed, sensors, binning, drills."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def configure_demo_rig(
    rig: Any,
    *,
    seed: int,
    sensor: int = 256,
    binning: int = 2,
    scenario: str = "none",
    onset_pair: int = 0,
    props: Sequence[tuple[str, str, object]] = (),
    specimen: str = "cells",
) -> None:
    """Seed, sensor size (both cameras), low-dose binning, the drill scenario from
    pair ``onset_pair`` on, the specimen (``cells`` or ``beads``), and any
    ``(device, property, value)`` on the core that holds the device, for a rig
    opened from ``hardware.demo_rig_path()``."""
    hub = rig.core_of("LowDoseCam").core
    hub.setProperty("DemoHub", "Specimen", specimen)
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
