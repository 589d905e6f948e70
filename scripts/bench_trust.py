"""Trust monitor: how often it flags affected pairs, and how rarely a matched model.

Acquires simultaneous demo runs (``open_rig(demo_rig_path())``: one core per camera,
one trigger line, + ``PairedAcquisition``) and
runs the monitor's check on every pair with a reference (offline, the same
``check_pair`` the live monitor runs), with the bundled model:

- familiar: fresh seeds, no scenario -> the fraction of pairs flagged (warn or alarm)
  is the false-flag rate (target <= 5 %);
- unseen-structure: the drill from ``--onset-pair`` on -> the fraction of affected
  pairs flagged (target >= 90 %), and the false flags before the onset;
- unlike camera: the low-dose camera at a quarter of the dose and another offset
  (a model used on a camera unlike its training) -> the fraction flagged.
- the monitor's cost: its whole check (``TrustMonitor.check``: consistency, reference
  scores, intervals, structures) per pair, median and 90th percentile in ms;
- invented and lost structure (the live monitor's structure check): the fraction of
  the familiar runs' checked pairs it flags (invented) for the bundled model (target <= 5 %)
  and for a weak model (``--weak``, or one this script trains for 2 minutes with
  ``pairscope train`` on a 20-pair demo run: it resolves fewer bead pairs than
  nearest neighbour; target >= 90 %).

    python scripts/bench_trust.py --seeds 201 202 203 204 --frames 20 --sensor 256
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pairscope.io import open_run
from pairscope.live import bundled_model_path
from pairscope.restore import StreamingRestorer, load_model
from pairscope.sim import ground_truth
from pairscope.trust import TrustMonitor, calibration_for_run, check_pair
from pairscope.trust._structures import RISK_TOLERANCE

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _demo_runs as demo_runs

MIXED = [0]  # pairs whose two frames read different triggers (not checked)
CHECK_MS: list[float] = []  # the monitor's full check, one per pair (ms)


def acquire(out: Path, seed: int, args, *, scenario: str = "none", props=()) -> Path:
    """A simultaneous run on the two-core demo rig (one trigger line)."""
    return demo_runs.acquire(
        out,
        seed,
        frames=args.frames,
        sensor=args.sensor,
        binning=args.binning,
        scenario=scenario,
        onset_pair=args.onset_pair,
        props=props,
    )


def monitor(run_dir: Path, restorer: StreamingRestorer) -> list[tuple[bool, str, dict]]:
    """(scenario active, verdict, metrics) per pair with a reference of its instant."""
    run = open_run(run_dir)
    cal = calibration_for_run(run)
    out = []
    for i in run.same_instant_pairs():
        pair = run[i]
        restored = restorer.restore_now(pair.lowdose)
        r = check_pair(pair.index, restored, pair.lowdose, pair.reference, cal)
        active = ground_truth.scenario_active(run.info, pair.metadata)
        out.append((active, r.verdict, r.metrics))
    MIXED[0] += len(run.with_reference()) - len(out)
    return out


def structure_flags(
    run_dir: Path, restorer: StreamingRestorer, out: Path
) -> tuple[int, int, list[dict]]:
    """(pairs the structure check flags, pairs it measured, their figures), with
    the live monitor's own check on every same-instant pair."""
    run = open_run(run_dir)
    mon = TrustMonitor(out, calibration=calibration_for_run(run))
    flagged = measured = 0
    figures = []
    for i in run.same_instant_pairs():
        pair = run[i]
        restored = restorer.restore_now(pair.lowdose)
        t = time.perf_counter()
        m = mon.check(
            pair.index, restored, pair.lowdose, pair.reference, metadata=pair.metadata
        ).metrics
        CHECK_MS.append(1000 * (time.perf_counter() - t))
        invented = m.get("structures_invented")
        if invented is None:
            continue
        measured += 1
        flagged += invented >= RISK_TOLERANCE  # the monitor's flag (lost: measured)
        figures.append({k: v for k, v in m.items() if k.startswith("structures")})
    mon.finish()
    return flagged, measured, figures


def train_weak_model(tmp: Path, args) -> Path:
    """A model trained 2 minutes on a 20-pair demo run (``pairscope train``)."""
    run = acquire(tmp, 5, argparse.Namespace(**{**vars(args), "frames": 20}))
    out = tmp / "weak.safetensors"
    subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "train", str(run), "--out", str(out),
         "--minutes", "2", "--block-size", "2"],
        check=True,
    )  # fmt: skip
    return out


def rate(results: list[tuple[bool, str, dict]], active: bool) -> tuple[int, int]:
    sel = [v for a, v, _ in results if a == active]
    return sum(v != "ok" for v in sel), len(sel)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[201, 202, 203, 204])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--sensor", type=int, default=256)
    p.add_argument("--binning", type=int, default=2)
    p.add_argument("--onset-pair", type=int, default=6)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--weak", type=Path, default=None,
                   help="a weak model for the structure check (default: train one)")  # fmt: skip
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    model_path = bundled_model_path(args.binning)
    restorer = StreamingRestorer(load_model(model_path), device="auto")
    counts = {
        k: [0, 0]
        for k in (
            "familiar",
            "before_onset",
            "affected",
            "unlike_camera",
            "structures_bundled",
            "structures_weak",
        )
    }
    structure_figures: dict[str, list[dict]] = {"bundled": [], "weak": []}
    worst = {"error_excess": 0.0, "error_excess_local": 0.0}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weak_path = args.weak or train_weak_model(Path(tmp) / "weak", args)
        weak = StreamingRestorer(load_model(weak_path), device="auto")
        for seed in args.seeds:
            familiar_run = acquire(Path(tmp), seed, args)
            fam = monitor(familiar_run, restorer)
            for name, rest in (("bundled", restorer), ("weak", weak)):
                k, n, figs = structure_flags(
                    familiar_run, rest, Path(tmp) / f"q-{name}-{seed}"
                )
                counts[f"structures_{name}"][0] += k
                counts[f"structures_{name}"][1] += n
                structure_figures[name] += figs
            for _, _, m in fam:  # what the matched model scores: below the levels
                for key in worst:
                    worst[key] = max(worst[key], float(m[key]))
            drill = monitor(
                acquire(Path(tmp), seed + 1000, args, scenario="unseen-structure"),
                restorer,
            )
            unlike = monitor(
                acquire(
                    Path(tmp),
                    seed + 2000,
                    args,
                    props=[
                        ("LowDoseCam", "Exposure", 5.0),
                        ("LowDoseCam", "Offset", 120),
                    ],
                ),
                restorer,
            )
            for key, (k, n) in (
                ("familiar", rate(fam, False)),
                ("before_onset", rate(drill, False)),
                ("affected", rate(drill, True)),
                ("unlike_camera", rate(unlike, False)),
            ):
                counts[key][0] += k
                counts[key][1] += n
            print(f"seed {seed}: {json.dumps(counts)}", file=sys.stderr, flush=True)
    figures = {
        k: {"flagged": k_, "pairs": n, "rate": k_ / n if n else None}
        for k, (k_, n) in counts.items()
    }
    figures["familiar_worst"] = worst
    figures["structure_tolerance"] = RISK_TOLERANCE
    figures["structure_figures"] = structure_figures
    figures["weak_model"] = str(weak_path) if args.weak else "trained 2 min here"
    figures["pairs_not_same_instant"] = MIXED[0]
    figures["check_ms"] = {  # the live monitor's whole check, per pair, this CPU
        "median": float(np.median(CHECK_MS)),
        "p90": float(np.percentile(CHECK_MS, 90)),
        "reference_px": args.sensor,
        "pairs": len(CHECK_MS),
    }
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    figures["args"] = {k: v for k, v in vars(args).items() if k != "json"}
    print(json.dumps(figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    rates = {
        k: v["rate"] for k, v in figures.items() if isinstance(v, dict) and "rate" in v
    }
    if any(r is None for r in rates.values()):  # a category with no pair
        missing = [k for k, r in rates.items() if r is None]
        print(f"not measured (no pair): {missing}", file=sys.stderr)
        return 1
    ok = (
        rates["affected"] >= 0.9
        and max(rates["familiar"], rates["before_onset"]) <= 0.05
        and rates["structures_weak"] >= 0.9
        and rates["structures_bundled"] <= 0.05
    )
    print("targets met" if ok else "TARGETS NOT MET", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
