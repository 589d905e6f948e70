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
  back from the run folders;
- same-instant partners paired / existed: judged by the core's own receive time
  of every frame (``pairscope.acquire.audit_pairing``), not by pairscope's clocks;
- on the C++ rig, per exposure: the reference camera's own bare sequence rate
  (its core alone, its own timestamps) and pairs/s against it.  Every block's
  frames are checked not blank (real pixels: DemoCamera ``FastImage 0``).

    python scripts/bench_acquisition.py --rig demo --pairs 1000 --block 200
    python scripts/bench_acquisition.py --rig cpp --pairs 10000 --block 1000 \
        --exposures 20 40
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
from pairscope.acquire import PairedAcquisition, audit_pairing
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
    audit = audit_pairing(recs)
    _check_real_pixels(run)
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
        "existed": audit.partners_existed,
        "paired": audit.partners_paired,
        "delivered_ms": last[0],
        "first_ms": starts[0],
    }


def _check_real_pixels(run: Any, every: int = 97) -> None:
    """Frames with structure, not blank (a FastImage 1 rig gives all-zero frames)."""
    for i in range(0, len(run), every):
        pair = run[i]
        for img in (pair.lowdose, pair.reference):
            if img is not None and not (img.max() > 0 and float(img.std()) > 1.0):
                raise SystemExit(f"blank frame in pair {i}: the rig gives no pixels")


def bare_rate(rig: Any, role: str, n: int = 1000) -> float:
    """A camera's own sequence rate (frames/s from its own stamps), its core alone."""
    rc = next(c for c in rig.cores if c.role == role)
    core = rc.core
    core.startSequenceAcquisition(rc.camera, n, 0, True)
    stamps: list[float] = []
    deadline = time.monotonic() + 60 + n
    while len(stamps) < n and time.monotonic() < deadline:
        while core.getRemainingImageCount():
            _, md = core.popNextImageAndMD()
            stamps.append(float(md["ElapsedTime-ms"]))
        time.sleep(0.001)
    core.stopSequenceAcquisition(rc.camera)
    return 1000.0 * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def bench(
    rig_name: str,
    pairs: int,
    block: int,
    sensor: int | None,
    exposure: float | None = None,
) -> dict:
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
            "existed": 0,
            "paired": 0,
            "complete_per_s": [],
        }
        for m in ("writer", "writer+restorer")
    }
    with tempfile.TemporaryDirectory() as tmp, open_rig(RIGS[rig_name]) as rig:
        if sensor and rig_name == "demo":
            for rc in rig.cores:
                rc.core.setProperty(rc.camera, "SensorSize", sensor)
        assert rig.spec is not None
        if exposure is not None:
            for rc in rig.cores:
                rc.core.setExposure(rc.camera, exposure)
        reference_rate = bare_rate(rig, "reference") if rig_name == "cpp" else None
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
                t["existed"] += r["existed"]
                t["paired"] += r["paired"]
                t["complete_per_s"].append(
                    (r["pairs"], r["delivered_ms"] - r["first_ms"])
                )
                print(
                    f"  block {i} {mode}: {r['pairs']} pairs, {r['status']}", flush=True
                )
        finally:
            stats = restorer.stats() if hasattr(restorer, "stats") else None
            restorer.stop()
    out = {
        "rig": rig_name,
        "block": block,
        "restorer": stats,
        "exposure_ms": exposure,
        "reference_bare_rate": reference_rate,
    }
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
            "same_instant_paired": t["paired"],
            "same_instant_existed": t["existed"],
            "same_instant_ratio": t["paired"] / max(t["existed"], 1),
        }
        if reference_rate:
            n_pairs = sum(n for n, _ in t["complete_per_s"])
            span_s = sum(ms for _, ms in t["complete_per_s"]) / 1000.0
            out[mode]["pairs_per_s_vs_reference_bare"] = (
                n_pairs / span_s / reference_rate
            )
    return out


def main() -> None:
    keep_frame_memory()  # as the pairscope CLI does
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rig", choices=sorted(RIGS), default="demo")
    p.add_argument("--pairs", type=int, default=1000, help="pairs per condition")
    p.add_argument("--block", type=int, default=200)
    p.add_argument("--sensor", type=int, default=None, help="demo: pixels per side")
    p.add_argument(
        "--exposures",
        type=float,
        nargs="*",
        default=None,
        help="exposures (ms) to run in turn, both cameras (default: the rig's)",
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    results = [
        bench(args.rig, args.pairs, args.block, args.sensor, exposure)
        for exposure in (args.exposures or [None])
    ]
    print(
        "| rig | exposure (ms) | condition | pairs | camera frames/s | pairs/s | ratio "
        "| same-instant paired / existed | complete pairs/s / reference's bare "
        "rate | overlap mean / worst 1 % (ms, shorter exposure) | simultaneous "
        "| dropped |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for mode in ("writer", "writer+restorer"):
            m = r[mode]
            bare = m.get("pairs_per_s_vs_reference_bare")
            print(
                f"| {args.rig} | {r['exposure_ms'] or 'rig'} | {mode} | {m['pairs']} | "
                f"{m['camera_rate']:.2f} | {m['pairs_per_s']:.2f} | {m['ratio']:.3f} | "
                f"{m['same_instant_paired']} / {m['same_instant_existed']} "
                f"({m['same_instant_ratio']:.3f}) | "
                f"{'-' if bare is None else f'{bare:.3f}'} | "
                f"{m['overlap_mean_ms']:.1f} / {m['overlap_p1_ms']:.1f} "
                f"({m['shorter_exposure_ms']:.0f}) | {m['simultaneous']} | "
                f"{m['dropped']} |"
            )
        print(f"restorer ({r['exposure_ms']} ms): {r['restorer']}")
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
