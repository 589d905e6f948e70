"""Benchmark: acquisition pairs/s with live restoration + preview on vs off (demo rig).

``--compare restorer`` (default): blocks with the restorer and the headless preview
on and off alternate in one run (the writer is on in both).  ``--compare window``:
restorer + headless preview ("off") against restorer + the Qt preview window
("on", offscreen Qt unless a display is set): what the window itself costs the
acquisition.  At a timelapse interval and free-running; "skipped" counts low-dose
frames the preview did not restore (newest frame wins); "trust checked" counts the
pairs the live trust monitor checked against their same-instant reference (it
calibrates on a run's first pairs, and skips a check when a newer pair came first).
Usage:

    python scripts/bench_live.py --pairs 400 --block 100 --intervals 100 0
    python scripts/bench_live.py --compare window --pairs 400 --block 100
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import useq

import pairscope
from pairscope._memory import keep_frame_memory
from pairscope.acquire import PairedAcquisition
from pairscope.config import AcquisitionSettings
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.live import LiveOptions, bundled_model_path, run_live
from pairscope.restore import (
    ModelInfo,
    StreamingRestorer,
    default_preview_network,
    load_model,
    loaded_from_network,
)


def _restorer() -> StreamingRestorer:
    path = bundled_model_path(2)
    if path is not None:
        return StreamingRestorer(load_model(path))
    net = default_preview_network(2)  # same compute as the shipped preview model
    return StreamingRestorer(
        loaded_from_network(net, ModelInfo.for_network(net, name="untrained"))
    )


def bench(
    interval_ms: float,
    pairs: int,
    block: int,
    sensor: int,
    out: Path,
    compare: str = "restorer",
) -> dict:
    totals = {"off": [0, 0.0], "on": [0, 0.0]}
    dropped = skipped = restored = 0
    trust = {"checked": 0, "with_reference": 0, "skipped": 0, "calibrating": 0}
    seq = useq.MDASequence(time_plan={"interval": interval_ms / 1000, "loops": block})
    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", sensor)
        core = rig  # the demo rig: one core per camera, triggered sequences
        for i in range(2 * (pairs // block)):
            on = bool(i % 2)
            settings = AcquisitionSettings(mode="triggered", binning=2)
            restorer = _restorer() if on or compare == "window" else None
            if compare == "window":  # restorer + writer + window (on) or headless
                opts = LiveOptions(
                    out=out,
                    headless=not on,
                    window=True if on else None,
                    keep_window_open=False,
                    progress=False,
                )
                s = run_live(core, settings, seq, options=opts, restorer=restorer)
            elif on:  # restorer + headless preview + writer
                opts = LiveOptions(out=out, headless=True, progress=False)
                s = run_live(core, settings, seq, options=opts, restorer=restorer)
            else:  # writer only
                s = PairedAcquisition(core, settings).run(seq, writer=RunWriter(out))
            run = pairscope.open_run(s.run_dir)
            dropped += s.expected_pairs - len(run)
            quality = Path(s.run_dir) / "quality_summary.json"
            if on and quality.is_file():  # the trust monitor's own counts
                q = json.loads(quality.read_text())
                trust["checked"] += q["checked"]
                trust["skipped"] += q["skipped"]
                trust["calibrating"] += q["calibrating"]
                trust["with_reference"] += len(run.same_instant_pairs())
            if restorer is not None:
                st = restorer.stats()
                skipped += st.skipped
                restored += st.restored
            key = "on" if on else "off"
            totals[key][0] += s.pairs
            totals[key][1] += (
                s.elapsed_s
            )  # the acquisition's own time, first to last trigger
    off = totals["off"][0] / totals["off"][1]
    on = totals["on"][0] / totals["on"][1]
    return {
        "interval": interval_ms,
        "off": off,
        "on": on,
        "ratio": on / off,
        "dropped": dropped,
        "restored": restored,
        "skipped": skipped,
        "pairs_each": totals["on"][0],
        "trust": trust,
    }


def main() -> None:
    keep_frame_memory()  # as the pairscope CLI does
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=400, help="pairs per condition")
    p.add_argument("--block", type=int, default=100)
    p.add_argument("--sensor", type=int, default=512)
    p.add_argument("--intervals", type=float, nargs="+", default=[100.0, 0.0])
    p.add_argument(
        "--compare",
        choices=["restorer", "window"],
        default="restorer",
        help="restorer: writer only vs + restorer/headless preview; window: "
        "headless preview vs the Qt window (both with the restorer)",
    )
    args = p.parse_args()
    if args.compare == "window" and not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    print(
        "| interval (ms) | pairs each | pairs/s off | pairs/s on | ratio | dropped "
        "| restored | skipped | trust checked / with a reference (calibrating, skipped) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for interval in args.intervals:
            r = bench(
                interval, args.pairs, args.block, args.sensor, Path(tmp), args.compare
            )
            t = r["trust"]
            checked = (
                f"{t['checked']} / {t['with_reference']} "
                f"({t['checked'] / max(t['with_reference'], 1):.3f}; "
                f"{t['calibrating']}, {t['skipped']})"
            )
            print(
                f"| {interval:g} | {r['pairs_each']} | {r['off']:.1f} | {r['on']:.1f} | "
                f"{r['ratio']:.3f} | {r['dropped']} | {r['restored']} | {r['skipped']} "
                f"| {checked} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
