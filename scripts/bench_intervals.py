"""Trust intervals: held-out coverage on fresh demo seeds, and how soon a drift shows.

For each fresh seed a simultaneous demo run is acquired (the two-core demo rig, one
trigger line) and every same-instant pair goes, in pair order, through the trust
monitor's check with the bundled model (``TrustMonitor.check``: the live path, so
the live calibration schedule).  Reported per risk level α:

- held-out coverage: the monitor's own figure, the fraction of a held-out pair's
  pixels whose reference (its noise put back) lies in the interval
  (target 1 - α, -0.03/+0.05);
- specimen coverage: the same pixels against the simulator's noise-free specimen
  (what the interval is for; the ground truth only a simulator has);
- the unseen-structure drill (``--onset-pair``): the first pair the interval
  metrics flag after the onset, and the false flags before it.

A plot of held-out coverage over the pairs goes to ``--plot``.

    python scripts/bench_intervals.py --seeds 301 302 --frames 300 --alphas 0.1 0.2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from pairscope.io import open_run
from pairscope.io.calibration import apply_registration
from pairscope.live import bundled_model_path
from pairscope.restore import StreamingRestorer, load_model
from pairscope.sim import ground_truth
from pairscope.trust import TrustMonitor, calibration_for_run
from pairscope.trust._conformal import crop_edges

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _demo_runs as demo_runs


def acquire(out: Path, seed: int, args, *, scenario: str = "none") -> Path:
    """A simultaneous run on the two-core demo rig (one trigger line)."""
    return demo_runs.acquire(
        out,
        seed,
        frames=args.frames,
        sensor=args.sensor,
        scenario=scenario,
        onset_pair=args.onset_pair,
    )


CACHE: dict[tuple[str, int], np.ndarray] = {}  # restored frames, reused across α


def check_run(run_dir: Path, restorer: StreamingRestorer, alpha: float, out: Path):
    """Rows (pair, role, held-out coverage, specimen coverage, flagged, active)."""
    run = open_run(run_dir)
    cal = calibration_for_run(run)
    monitor = TrustMonitor(out, calibration=cal, alpha=alpha)
    rows = []
    for i in run.same_instant_pairs():
        pair = run[i]
        key = (str(run_dir), i)
        if key not in CACHE:
            CACHE[key] = restorer.restore_now(pair.lowdose)
        restored = CACHE[key]
        monitor.check(
            pair.index, restored, pair.lowdose, pair.reference, metadata=pair.metadata
        )
        line = monitor.results[-1]
        specimen = None
        if line["interval_role"] == "heldout" and line["coverage"] is not None:
            assert monitor.intervals is not None
            iv = monitor.intervals.interval(restored)
            a, b = monitor.intervals._map()
            truth = ground_truth.noise_free_reference(run.info, pair.metadata)
            t = (apply_registration(truth, cal.registration) - b) / a
            inside = (t >= iv.lower) & (t <= iv.upper)
            specimen = float(crop_edges(cal, inside).mean())
        flagged = "interval" in line["reason"]
        active = ground_truth.scenario_active(run.info, pair.metadata)
        rows.append((pair.index, line["interval_role"], line["coverage"], specimen,
                     flagged, active))  # fmt: skip
    monitor.finish()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[301, 302])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--sensor", type=int, default=512)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.2])
    p.add_argument("--onset-pair", type=int, default=150)
    p.add_argument("--drill-frames", type=int, default=200)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=Path("intervals_coverage.png"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = load_model(bundled_model_path(2), expect_factor=2)
    restorer = StreamingRestorer(model, device="auto")
    tmp = Path(tempfile.mkdtemp(prefix="bench_intervals_"))
    figures: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    curves = {}
    runs = [acquire(tmp / f"seed{s}", s, args) for s in args.seeds]
    for alpha in args.alphas:
        held, spec = [], []
        for seed, run_dir in zip(args.seeds, runs, strict=True):
            rows = check_run(run_dir, restorer, alpha, tmp / f"q{seed}-{alpha}")
            h = [
                (k, c)
                for k, role, c, _, _, _ in rows
                if role == "heldout" and c is not None
            ]
            held += [c for _, c in h]
            spec += [s for *_, s, _, _ in rows if s is not None]
            curves[(alpha, seed)] = h
        figures[f"alpha {alpha:g}"] = {
            "target": 1 - alpha,
            "heldout_coverage": float(np.mean(held)),
            "specimen_coverage": float(np.mean(spec)),
            "heldout_pairs": len(held),
        }
        print(f"alpha {alpha:g}: held-out coverage {np.mean(held):.3f} "
              f"(target {1 - alpha:.2f}, {len(held)} pairs), specimen coverage "
              f"{np.mean(spec):.3f}", flush=True)  # fmt: skip
    drill_args = argparse.Namespace(**{**vars(args), "frames": args.drill_frames})
    drill = acquire(tmp / "drill", args.seeds[0] + 1000, drill_args,
                    scenario="unseen-structure")  # fmt: skip
    rows = check_run(drill, restorer, args.alphas[0], tmp / "qdrill")
    before = [f for *_, f, active in rows if not active]
    after = [k for k, _, _, _, f, active in rows if active and f]
    first_active = next((r[0] for r in rows if r[5]), None)
    figures["drill"] = {
        "onset_pair": first_active,
        "first_flagged_pair": after[0] if after else None,
        "pairs_to_flag": (after[0] - first_active + 1)
        if after and first_active is not None
        else None,
        "false_flags_before": sum(before),
        "pairs_before": len(before),
    }
    print(f"unseen-structure drill: onset at pair {first_active}, first flagged "
          f"{figures['drill']['first_flagged_pair']} "
          f"({figures['drill']['pairs_to_flag']} pairs), false flags before "
          f"{sum(before)} of {len(before)}", flush=True)  # fmt: skip
    _plot(curves, args.plot)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    for (alpha, seed), pts in curves.items():
        if pts:
            k, c = zip(*pts, strict=True)
            ax.plot(k, c, ".-", lw=0.8, label=f"alpha {alpha:g}, seed {seed}")
            ax.axhline(1 - alpha, color="0.4", ls="--", lw=0.8)
    ax.set_xlabel("pair")
    ax.set_ylabel("held-out coverage")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
