"""Benchmark: a rig's paired acquisition against its cameras' own sequence rate.

Camera-timed: exposures take their real time and the cameras run hardware-timed
sequences (mode 'triggered').  Blocks with the writer only and with writer + live
restorer (bundled x2 model, its own low-priority thread) alternate within one
run (this machine is noisy), so each ratio compares like with like.

- camera rate: frames/s from the leader camera's own timestamps (first to last
  exposure start of a block);
- pairs/s: pairs delivered (written) from the first exposure start to the last
  delivery; ratio = pairs/s / camera rate;
- exposure overlap of each pair (mean, 1st percentile: the worst 1 %), pairs
  simultaneous, and dropped = frames the cameras were asked for minus frames read
  back from the run folders.

    python scripts/bench_acquisition.py --rig demo --pairs 1000 --block 200
    python scripts/bench_acquisition.py --rig cpp --pairs 10000 --block 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import useq

import pairscope
from pairscope._memory import keep_frame_memory
from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.live import bundled_model_path
from pairscope.restore import StreamingRestorer, load_model

RIGS = {
    "demo": demo_rig_path(),
    "cpp": Path(__file__).parents[1] / "hardware_configs" / "cpp_democamera_rig.yaml",
}


def run_block(acq: PairedAcquisition, n: int, out: Path, restorer: Any) -> dict:
    last = [0.0]
    engine_clock: list[Any] = []

    def delivered(pair: Any) -> None:
        if engine_clock:
            last[0] = engine_clock[0].ms()
        if restorer is not None and pair.lowdose is not None:
            restorer.submit(pair.index, pair.lowdose)

    acq.events.started.connect(lambda _: engine_clock.append(acq._engine.clock))
    acq.events.pairReady.connect(delivered)
    try:
        s = acq.run(
            useq.MDASequence(time_plan={"interval": 0, "loops": n}),
            writer=RunWriter(out),
        )
    finally:
        acq.events.pairReady.disconnect(delivered)
        acq.events.started.disconnect()
    run = pairscope.open_run(s.run_dir)
    recs = run.records
    lows = [r["lowdose"] for r in recs if r["lowdose"]]
    starts = [w["exposure_window_ms"][0] for w in lows]
    both = [r for r in recs if r["lowdose"] and r["reference"]]
    shorter = [
        min(r["lowdose"]["exposure_ms"], r["reference"]["exposure_ms"]) for r in both
    ]
    overlap = [r["exposure_overlap_ms"] for r in both]
    frames_read = len(lows) + sum(1 for r in recs if r["reference"])
    return {
        "status": s.status,
        "pairs": len(both),
        "camera_span_ms": starts[-1] - starts[0],
        "camera_frames": len(starts),
        "acq_span_ms": last[0] - starts[0],
        "overlap": overlap,
        "shorter": shorter,
        "simultaneous": sum(1 for r in recs if r.get("simultaneous")),
        "dropped": 2 * n - frames_read,
    }


def bench(rig_name: str, pairs: int, block: int, sensor: int | None) -> dict:
    tot: dict[str, dict[str, Any]] = {
        m: {
            "pairs": 0,
            "acq_pairs": 0,
            "cam_frames": 0,
            "cam_ms": 0.0,
            "acq_ms": 0.0,
            "ov": [],
            "sh": [],
            "sim": 0,
            "dropped": 0,
            "bad": 0,
        }
        for m in ("writer", "writer+restorer")
    }
    with tempfile.TemporaryDirectory() as tmp, open_rig(RIGS[rig_name]) as rig:
        if sensor and rig_name == "demo":
            for rc in rig.cores:
                rc.core.setProperty(rc.camera, "SensorSize", sensor)
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)
        model = load_model(bundled_model_path(acq.detectors.factor))
        restorer = StreamingRestorer(model)
        restorer.start()
        try:
            for i in range(2 * (pairs // block)):
                mode = "writer+restorer" if i % 2 else "writer"
                r = run_block(acq, block, Path(tmp), restorer if i % 2 else None)
                t = tot[mode]
                t["pairs"] += r["pairs"]
                t["acq_pairs"] += r["pairs"] - 1  # intervals, as for the camera
                t["cam_frames"] += r["camera_frames"] - 1
                t["cam_ms"] += r["camera_span_ms"]
                t["acq_ms"] += r["acq_span_ms"]
                t["ov"] += r["overlap"]
                t["sh"] += r["shorter"]
                t["sim"] += r["simultaneous"]
                t["dropped"] += r["dropped"]
                t["bad"] += r["status"] != "completed"
                print(
                    f"  block {i} {mode}: {r['pairs']} pairs, {r['status']}", flush=True
                )
        finally:
            stats = restorer.stats() if hasattr(restorer, "stats") else None
            restorer.stop()
    out = {"rig": rig_name, "block": block, "restorer": stats}
    for mode, t in tot.items():
        cam_rate = 1000.0 * t["cam_frames"] / t["cam_ms"]
        acq_rate = 1000.0 * t["acq_pairs"] / t["acq_ms"]
        ov = np.asarray(t["ov"])
        out[mode] = {
            "pairs": t["pairs"],
            "camera_rate": cam_rate,
            "pairs_per_s": acq_rate,
            "ratio": acq_rate / cam_rate,
            "overlap_mean_ms": float(ov.mean()),
            "overlap_p1_ms": float(np.percentile(ov, 1)),
            "shorter_exposure_ms": float(np.mean(t["sh"])),
            "simultaneous": t["sim"],
            "dropped": t["dropped"],
            "not_completed": t["bad"],
        }
    return out


def main() -> None:
    keep_frame_memory()  # as the pairscope CLI does
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rig", choices=sorted(RIGS), default="demo")
    p.add_argument("--pairs", type=int, default=1000, help="pairs per condition")
    p.add_argument("--block", type=int, default=200)
    p.add_argument("--sensor", type=int, default=None, help="demo: pixels per side")
    args = p.parse_args()
    t0 = time.perf_counter()
    r = bench(args.rig, args.pairs, args.block, args.sensor)
    print(
        "| rig | condition | pairs | camera frames/s | pairs/s | ratio | overlap mean / "
        "worst 1 % (ms, shorter exposure) | simultaneous | dropped |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in ("writer", "writer+restorer"):
        m = r[mode]
        print(
            f"| {args.rig} | {mode} | {m['pairs']} | {m['camera_rate']:.2f} | "
            f"{m['pairs_per_s']:.2f} | {m['ratio']:.3f} | {m['overlap_mean_ms']:.1f} / "
            f"{m['overlap_p1_ms']:.1f} ({m['shorter_exposure_ms']:.0f}) | "
            f"{m['simultaneous']} | {m['dropped']} |"
        )
    print(f"restorer: {r['restorer']}; {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
