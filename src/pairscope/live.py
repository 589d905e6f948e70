"""A live session: paired acquisition + writer, with restoration and preview on top.

Acquisition never waits for the restorer or the preview: they receive the newest
low-dose frame and drop the rest (counted); only the writer may apply back-pressure.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pymmcore_plus import CMMCorePlus
from tqdm import tqdm
from useq import MDASequence

from .acquire import AcquisitionSummary, Pair, PairedAcquisition
from .config import AcquisitionSettings
from .io import RunWriter

logger = logging.getLogger(__name__)


def run_live(
    core: CMMCorePlus,
    settings: AcquisitionSettings,
    sequence: MDASequence,
    *,
    config_path: str | Path | None,
    options: argparse.Namespace,
) -> AcquisitionSummary:
    """Run ``sequence`` with writing, progress, live restoration and preview."""
    acq = PairedAcquisition(core, settings, config_path=config_path)
    writer = RunWriter(options.out)
    bar = None
    if not options.no_progress:
        n = sum(1 for _ in sequence.iter_events())
        bar = tqdm(total=n, unit="pair", desc="paired acquisition", leave=True)

        def _tick(_: Pair) -> None:
            bar.update(1)

        acq.events.pairReady.connect(_tick)
    try:
        return acq.run(sequence, writer=writer)
    finally:
        if bar is not None:
            bar.close()
