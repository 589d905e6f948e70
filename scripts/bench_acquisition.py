"""Benchmark: paired acquisition pairs/s with and without the writer, dropped pairs.

Blocks with and without the writer alternate within one run (this machine is
noisy), so the ratio compares like with like.  Usage:

    python scripts/bench_acquisition.py --pairs 2000 --block 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import useq

import pairscope
from pairscope._memory import keep_frame_memory
from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_config_path, open_core
from pairscope.io import RunWriter


def bench(binning: int, sensor: int, pairs: int, block: int, out: Path) -> dict:
    totals = {"off": [0, 0.0], "on": [0, 0.0]}
    dropped = 0
    with open_core(demo_config_path()) as core:
        for cam in ("LowDoseCam", "ReferenceCam"):
            core.setProperty(cam, "SensorSize", sensor)
        core.setProperty("LowDoseCam", "Binning", binning)
        acq = PairedAcquisition(core)
        seq = useq.MDASequence(time_plan={"interval": 0, "loops": block})
        for i in range(2 * (pairs // block)):
            mode = "on" if i % 2 else "off"
            writer = RunWriter(out) if mode == "on" else None
            t0 = time.perf_counter()
            s = acq.run(seq, writer=writer)
            elapsed = time.perf_counter() - t0  # writer close (final fsync) included
            dropped += s.expected_pairs - s.pairs
            if writer is not None:
                dropped += s.pairs - len(pairscope.open_run(writer.run_dir))
            totals[mode][0] += s.pairs
            totals[mode][1] += elapsed
    off = totals["off"][0] / totals["off"][1]
    on = totals["on"][0] / totals["on"][1]
    return {
        "binning": binning,
        "sensor": sensor,
        "pairs_each": totals["on"][0],
        "off": off,
        "on": on,
        "ratio": on / off,
        "dropped": dropped,
    }


def main() -> None:
    keep_frame_memory()  # as the pairscope CLI does
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=2000, help="pairs per condition")
    p.add_argument("--block", type=int, default=200)
    p.add_argument("--sensor", type=int, default=512)
    args = p.parse_args()
    print(
        "| reference | binning | pairs each | pairs/s no writer | pairs/s writer | ratio | dropped |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for binning in (2, 4):
            r = bench(binning, args.sensor, args.pairs, args.block, Path(tmp))
            print(
                f"| {r['sensor']}² | {binning} | {r['pairs_each']} | {r['off']:.1f} | "
                f"{r['on']:.1f} | {r['ratio']:.3f} | {r['dropped']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
