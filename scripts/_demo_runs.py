"""Simultaneous demo runs for the benchmarks: the two-core demo rig (one core per
camera, one trigger line) with ``PairedAcquisition``, as a user acquires them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import useq

from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.sim import configure_demo_rig


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
    specimen: str = "cells",
) -> Path:
    """One run of ``frames`` triggered pairs of the ``specimen`` (``cells`` or
    ``beads``); ``props`` as ``(device, property, value)`` on whichever core holds
    the device."""
    with open_rig(demo_rig_path()) as rig:
        configure_demo_rig(
            rig,
            seed=seed,
            sensor=sensor,
            binning=binning,
            scenario=scenario,
            onset_pair=onset_pair,
            props=props,
            specimen=specimen,
        )
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)  # triggered sequences
        seq = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
        summary = acq.run(seq, writer=RunWriter(out))
    if summary.run_dir is None:
        raise SystemExit(f"the demo acquisition failed: {summary}")
    return Path(summary.run_dir)
