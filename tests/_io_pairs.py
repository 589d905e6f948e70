"""Synthetic pairs with the manifest contract's per-frame keys, for writer tests.

Also runnable as a script: ``python -m tests._io_pairs RUN_ROOT N [FORMAT]`` writes N
pairs (forever if N is 0) through a real RunWriter and prints the run folder first;
the kill -9 and disk-full tests drive it as a separate process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pairscope.acquire._pair import Pair

LOW_PX, REF_PX = 0.2, 0.1


def frame(kind: str, k: int, size: int = 32) -> np.ndarray:
    """A frame whose pixels encode ``k`` (so a read-back can be checked exactly)."""
    n = size if kind == "reference" else size // 2
    rng = np.random.default_rng(k * 2 + (kind == "reference"))
    img = rng.integers(100, 4000, (n, n), dtype=np.uint16)
    img[0, 0] = k
    return img


def frame_info(camera: str, k: int, binning: int, px: float) -> dict[str, Any]:
    start = 100.0 * k
    return {
        "camera": camera,
        "camera_image_number": k,
        "exposure_window_ms": [start, start + 20.0],
        "timing_source": "camera",
        "exposure_ms": 20.0,
        "binning": binning,
        "pixel_size_um": px,
    }


def make_pair(
    k: int,
    *,
    size: int = 32,
    reference: bool = True,
    lowdose: bool = True,
    event: dict[str, int] | None = None,
    binning: int = 2,
) -> Pair:
    low = frame("lowdose", k, size * 2 // binning) if lowdose else None
    ref = frame("reference", k, size) if reference else None
    meta: dict[str, Any] = {
        "lowdose": frame_info("LowDoseCam", k, binning, REF_PX * binning),
        "reference": frame_info("ReferenceCam", k, 1, REF_PX) if reference else None,
        "simultaneous": True,
        "exposure_overlap_ms": 20.0,
        "event_index": event if event is not None else {"t": k},
        "stage_xyz_um": [10.0 + k, -5.0, 2.5],
    }
    if not lowdose:
        meta["partner_missing"] = "lowdose"
    return Pair(k, low, ref, meta)  # type: ignore[arg-type]


RUN_INFO = {
    "pairscope_version": "test",
    "detectors": {"lowdose": "LowDoseCam", "reference": "ReferenceCam", "factor": 2},
    "system_state": {
        "DemoHub": {"NumericalAperture": "1.2", "EmissionWavelength_nm": "520"},
        "LowDoseCam": {"Gain": "0.5", "Offset": "100"},
        "ReferenceCam": {"Gain": "0.5", "Offset": "100"},
    },
    "sequence": {"channels": [{"config": "GFP", "group": "Channel"}]},
}


def main(argv: list[str]) -> int:
    from pairscope.errors import WriterError
    from pairscope.io import RunWriter

    root, n = Path(argv[0]), int(argv[1])
    fmt = argv[2] if len(argv) > 2 else "ome-tiff"
    writer = RunWriter(root, commit_interval_s=0.02, format=fmt)
    print(writer.run_dir, flush=True)
    writer.start(RUN_INFO)
    k = 0
    try:
        while n == 0 or k < n:
            writer.submit(make_pair(k, size=64))
            k += 1
            time.sleep(0.002)
    except WriterError as err:
        print(f"submit refused: {err}", file=sys.stderr, flush=True)
    try:
        writer.close({"status": "completed"})
    except WriterError as err:
        print(f"close: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
