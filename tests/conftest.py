"""Shared fixtures: the real UniMMCore with the demo devices, real run folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import useq

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pairscope.acquire import PairedAcquisition
from pairscope.config import AcquisitionSettings
from pairscope.hardware import demo_config_path, demo_rig_path, open_core, open_rig
from pairscope.io import RunWriter

DEMO_CFG = demo_config_path()
DEMO_RIG = demo_rig_path()


@pytest.fixture
def demo_core() -> Iterator:
    """The demo microscope, loaded from the shipped config."""
    with open_core(DEMO_CFG) as core:
        yield core


def acquire_demo_run(
    out: Path,
    *,
    frames: int = 8,
    binning: int = 2,
    seed: int = 0,
    sensor: int = 256,
    settings: AcquisitionSettings | None = None,
) -> Path:
    """Acquire a small paired run on the demo rig (one core per camera, triggered
    sequences unless ``settings`` say otherwise) and return its folder."""
    with open_rig(DEMO_RIG) as rig:
        rig.primary.core.setProperty("DemoHub", "Seed", seed)
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", sensor)
        rig.primary.core.setProperty("LowDoseCam", "Binning", binning)
        assert rig.spec is not None
        acq = PairedAcquisition(rig, settings or rig.spec.pairing)
        summary = acq.run(
            useq.MDASequence(time_plan={"interval": 0, "loops": frames}),
            writer=RunWriter(out),
        )
    assert summary.status == "completed", summary
    assert summary.run_dir is not None
    return Path(summary.run_dir)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-pair, 256x256-reference, binning-2 demo run (shared, read-only)."""
    return acquire_demo_run(tmp_path_factory.mktemp("runs"), frames=12)
