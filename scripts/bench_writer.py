"""Writer capacity: replayed 2048² reference + 1024² low-dose uint16 pairs through
``RunWriter`` vs the disk's own fsync'd sequential write rate, in one run.

    python scripts/bench_writer.py --pairs 500 --repeats 2 --rate 30 --markdown

The disk's rate (a ``dd conv=fsync``-like write of the same volume in 10 MiB
blocks, fsync every 64 blocks and at the end) is measured between the writer runs
(disk, writer, disk, writer, disk, after a warm-up); medians are compared.  A writer
run submits pre-made frames as fast as ``submit`` accepts them (no simulation cost;
the acquisition engine's pairing is not part of it), closes the run (OME-XML,
run.json) and counts the pairs on disk.  A paced run at ``--rate`` pairs/s gives the
submit latency an acquisition sees below capacity.  Prints one JSON object;
``--markdown`` also prints a table row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pairscope.io import RunWriter, open_run

MB = 1 << 20


@dataclass(frozen=True, slots=True)
class _Pair:
    index: int
    lowdose: np.ndarray
    reference: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def disk_rate(folder: Path, nbytes: int, block: int = 10 * MB) -> float:
    """MB/s of a sequential write of ``nbytes`` with fsyncs (and the file removed)."""
    data = np.random.default_rng(0).integers(0, 2**16, block // 2, np.uint16).tobytes()
    path = folder / "disk_rate.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(max(1, nbytes // block)):
            os.write(fd, data)
            if i % 64 == 63:
                os.fsync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    path.unlink()
    return nbytes / MB / seconds


def writer_run(
    folder: Path,
    n: int,
    ref_size: int,
    factor: int,
    rate: float | None = None,
    fmt: str = "ome-tiff",
) -> dict[str, Any]:
    """Submit ``n`` replayed pairs (at ``rate`` pairs/s, or as fast as accepted)."""
    rng = np.random.default_rng(1)
    refs = [rng.integers(100, 4000, (ref_size, ref_size), np.uint16) for _ in range(4)]
    lows = [
        rng.integers(100, 4000, (ref_size // factor,) * 2, np.uint16) for _ in range(4)
    ]
    writer = RunWriter(folder, name="bench", format=fmt)
    writer.start({"detectors": {"factor": factor}, "benchmark": True})
    latencies = np.empty(n)
    t0 = time.perf_counter()
    for k in range(n):
        meta = {
            "lowdose": {"camera": "Low", "exposure_ms": 10.0, "binning": factor,
                        "pixel_size_um": 0.2, "exposure_window_ms": [k * 10.0, k * 10.0 + 10]},
            "reference": {"camera": "Ref", "exposure_ms": 10.0, "binning": 1,
                          "pixel_size_um": 0.1, "exposure_window_ms": [k * 10.0, k * 10.0 + 10]},
            "event_index": {"t": k},
            "stage_xyz_um": [0.0, 0.0, 0.0],
        }  # fmt: skip
        pair = _Pair(k, lows[k % 4], refs[k % 4], meta)
        if rate:
            time.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
        s = time.perf_counter()
        writer.submit(pair)
        latencies[k] = time.perf_counter() - s
    t_submitted = time.perf_counter() - t0
    written = writer.close({"status": "completed"})
    seconds = time.perf_counter() - t0
    with open_run(writer.run_dir) as run:
        on_disk = len(run)
        last = run[len(run) - 1]
        assert last.reference is not None and last.reference.shape == (ref_size,) * 2
    nbytes = n * (refs[0].nbytes + lows[0].nbytes)
    shutil.rmtree(writer.run_dir)
    return {
        "pairs": n,
        "pairs_written": written,
        "pairs_on_disk": on_disk,
        "pairs_lost": n - on_disk,
        "seconds_incl_close": round(seconds, 3),
        "seconds_submitting": round(t_submitted, 3),
        "pairs_per_s": round(n / seconds, 1),
        "writer_MB_per_s": round(nbytes / MB / seconds, 1),
        "submit_p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 3),
        "submit_p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 3),
        "submit_max_ms": round(float(latencies.max()) * 1e3, 3),
        "bytes": nbytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2, help="writer runs (medians)")
    ap.add_argument("--rate", type=float, default=30.0, help="paced run, pairs/s")
    ap.add_argument("--reference-size", type=int, default=2048)
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--format", choices=("ome-tiff", "ome-zarr"), default="ome-tiff")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_writer_", dir=args.dir))
    size, f = args.reference_size, args.factor
    nbytes = args.pairs * (size**2 * 2) * (1 + 1 / f**2)
    disks, runs = [], []
    try:
        disk_rate(folder, int(nbytes) // 4)  # warm-up (first writes are slow)
        disks.append(disk_rate(folder, int(nbytes)))
        for _ in range(args.repeats):  # disk, writer, disk, writer, disk
            runs.append(writer_run(folder, args.pairs, size, f, fmt=args.format))
            disks.append(disk_rate(folder, int(nbytes)))
        paced = writer_run(
            folder,
            min(args.pairs, int(10 * args.rate)),
            size,
            f,
            args.rate,
            args.format,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    disk = float(np.median(disks))
    writer = float(np.median([r["writer_MB_per_s"] for r in runs]))
    result = {
        "format": args.format,
        "pairs_per_run": args.pairs,
        "reference_size": size,
        "factor": f,
        "disk_MB_per_s": [round(d, 1) for d in disks],
        "writer_MB_per_s": [r["writer_MB_per_s"] for r in runs],
        "writer_pairs_per_s": [r["pairs_per_s"] for r in runs],
        "writer_to_disk_ratio": round(writer / disk, 3),
        "pairs_lost": sum(r["pairs_lost"] for r in runs) + paced["pairs_lost"],
        "pairs_total": sum(r["pairs"] for r in runs) + paced["pairs"],
        "unpaced_submit_p99_ms": max(r["submit_p99_ms"] for r in runs),
        "paced_rate_pairs_per_s": args.rate,
        "paced": paced,
    }
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(
            f"| {args.format} | {args.pairs}×{args.repeats} + {paced['pairs']} paced | "
            f"{writer:.0f} | "
            f"{disk:.0f} | {result['writer_to_disk_ratio']:.2f} | "
            f"{paced['submit_p50_ms']} / {paced['submit_p99_ms']} ms at "
            f"{args.rate:g} pairs/s | {result['unpaced_submit_p99_ms']:.0f} ms | "
            f"{result['pairs_lost']} of {result['pairs_total']} |"
        )


if __name__ == "__main__":
    main()
