"""Two-point honesty on the demo: pairs resolved, matched rods split, the ideal bound.

Acquires demo runs at fresh seeds (the specimen's bead pairs at 0.5-2 Rayleigh
distances, each with its matched single rod, 1.8x the separation long and as
bright), at one or more light powers, and runs ``pairscope evaluate`` with each
model on them.  Per power and separation it reports the fraction of pairs the ideal
observer resolves from the low-dose frame at <= 5 % rods split (from the run's rig
model: photometry and Airy PSF), and for the model, every baseline and the
reference the pairs resolved and the rods split (95 % intervals).  A method
splitting more than 5 % of rods invents there.

    python scripts/bench_two_point.py --seeds 601 602 --frames 10 --power 100 30 \
        --out docs/two_point_control.json --plot docs/two_point_control.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pairscope.evaluate import evaluate
from pairscope.io import open_run
from pairscope.live import bundled_model_path
from pairscope.metrics import (
    TABLE_METHODS,
    new_figure,
    rod_split,
    save_figure,
    two_point_resolved,
)
from pairscope.restore import load_model
from pairscope.rig import rig_model_for_run
from pairscope.sim.ground_truth import noise_free_reference, targets_in_pixels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo_runs import acquire


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[601, 602])
    p.add_argument("--frames", type=int, default=10, help="pairs per run")
    p.add_argument("--power", type=float, nargs="+", default=[100.0],
                   help="light power(s), percent (the photon level)")  # fmt: skip
    p.add_argument("--binning", type=int, default=2)
    p.add_argument("--specimen", choices=("cells", "beads"), default="cells",
                   help="the demo specimen (beads: a bead slide)")  # fmt: skip
    p.add_argument("--models", type=Path, nargs="*", default=[],
                   help="model files (default: the bundled model)")  # fmt: skip
    p.add_argument("--self-ensemble", action="store_true",
                   help="score each model as `restore --self-ensemble` restores: the "
                   "mean of its restorations of the eight flips and quarter turns")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON of every row")
    p.add_argument("--plot", type=Path, default=None, help="PNG per power")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    models = args.models or [bundled_model_path(args.binning)]
    t0 = time.monotonic()
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for power in args.power:
            runs = [
                acquire(Path(tmp) / f"p{power:g}", s, frames=args.frames,
                        binning=args.binning, props=[("LED", "Power_percent", power)],
                        specimen=args.specimen)
                for s in args.seeds
            ]  # fmt: skip
            expected = expected_reference(runs)
            for path in models:
                model = load_model(path)
                out = Path(tmp) / f"eval-{power:g}-{path.stem}"
                report = evaluate(
                    model, runs, out, self_ensemble=args.self_ensemble, progress=True
                )
                table = report["two_point_table"]["per_separation"]
                results.append(
                    {
                        "power_percent": power,
                        "model": str(path.name)
                        + (" (self-ensemble)" if args.self_ensemble else ""),
                        "pairs": report["pairs"],
                        "bead_electrons": bead_electrons(table),
                        "rows": report["two_point"],
                        "expected_reference": expected,
                        "regressions": report["regressions"],
                    }
                )
    summary = {
        "command": " ".join(sys.argv),
        "seeds": args.seeds,
        "frames": args.frames,
        "seconds": round(time.monotonic() - t0, 1),
        "results": results,
    }
    print(markdown(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    if args.plot:
        plot(summary, args.plot)


def bead_electrons(table: list[dict]) -> float | None:
    """The beads' mean photoelectrons in the low-dose frame, over the separations
    of ``pairscope evaluate``'s two-point table (``None`` without the ideal
    observer's fit)."""
    values = [r["ideal"]["bead_electrons_median"] for r in table if r.get("ideal")]
    return round(sum(values) / len(values), 1) if values else None


def expected_reference(runs: list[Path]) -> dict[float, dict[str, float]]:
    """Per separation (Rayleigh), the pairs resolved and rods split in the demo
    reference frames' expectation (their noise-free photons, from the run's ground
    truth): what a restoration that predicts the reference exactly would show.
    Near the Rayleigh limit a noisy reference's count strays from it (its peaks
    are maxima of noisy samples, its dip a minimum): more on a bright bead slide,
    fewer once resampled onto the low-dose grid."""
    hits: dict[float, dict[str, list[bool]]] = {}
    for path in runs:
        run = open_run(path)
        camera = run.info["detectors"]["reference"]
        rig = rig_model_for_run(run)
        pixel_um, ray = rig.reference.unbinned_pixel_size_um, rig.optics.rayleigh_um
        assert pixel_um is not None, "a demo run's reference pixel size is known"
        for record in run.records:
            if record.get("reference") is None:
                continue
            image = noise_free_reference(run.info, record, camera)
            for rods in (False, True):
                for a, b, sep in targets_in_pixels(run.info, record, camera, rods=rods):
                    row = hits.setdefault(
                        round(sep / ray, 3), {"pairs": [], "rods": []}
                    )
                    if rods:
                        hit = rod_split(image, a, b, sep / pixel_um).resolved
                    else:
                        hit = two_point_resolved(image, a, b).resolved
                    row["rods" if rods else "pairs"].append(hit)
    return {
        sep: {k: sum(v) / len(v) for k, v in row.items() if v}
        for sep, row in sorted(hits.items())
    }


def _cell(row: dict, key: str) -> str:
    v, ci = row[key], row[f"{key}_ci95"]
    return "–" if v is None else f"{v:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]"


def markdown(summary: dict) -> str:
    lines = []
    for res in summary["results"]:
        lines += [
            "",
            f"{res['model']}, light {res['power_percent']:g} %, "
            f"{res['bead_electrons']} e- per bead in the low-dose frame, "
            f"{res['pairs']} pairs; pairs resolved / rods split:",
            "",
            "| separation (R) | ideal | "
            + " | ".join(TABLE_METHODS)
            + " | reference's expectation |",
            "|---" * (3 + len(TABLE_METHODS)) + "|",
        ]
        by_sep: dict[float, dict[str, dict]] = {}
        for row in res["rows"]:
            by_sep.setdefault(row["separation_rayleigh"], {})[row["method"]] = row
        for sep, rows in by_sep.items():
            ideal = next(iter(rows.values()))["ideal_resolvable"]
            cells = [
                f"{_cell(rows[m], 'pairs_resolved')} / {_cell(rows[m], 'rods_split')}"
                + (" !" if rows[m]["inventing"] else "")
                for m in TABLE_METHODS
            ]
            ideal_text = "–" if ideal is None else f"{ideal:.0%}"
            exp = res.get("expected_reference", {}).get(sep)
            exp_text = (
                "–"
                if not exp
                else f"{exp.get('pairs', 0):.0%} / {exp.get('rods', 0):.0%}"
            )
            lines.append(
                f"| {sep:g} | {ideal_text} | " + " | ".join(cells) + f" | {exp_text} |"
            )
    lines.append(f"\n{summary['seconds']} s: `{summary['command']}`")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    """Per result: pairs resolved (left) and rods split (right) per separation."""
    n = len(summary["results"])
    fig = new_figure((11.0, 3.6 * n))
    axes = fig.subplots(n, 2, squeeze=False)
    for (ax1, ax2), res in zip(axes, summary["results"], strict=True):
        for m in TABLE_METHODS:
            rows = [r for r in res["rows"] if r["method"] == m]
            seps = [r["separation_rayleigh"] for r in rows]
            ax1.plot(seps, [r["pairs_resolved"] for r in rows], "o-", label=m)
            ax2.plot(seps, [r["rods_split"] for r in rows], "o-", label=m)
        ideal = [r for r in res["rows"] if r["method"] == "model"]
        ax1.plot([r["separation_rayleigh"] for r in ideal],
                 [r["ideal_resolvable"] for r in ideal], "k--x",
                 label="ideal observer (5 % rods split)")  # fmt: skip
        label_panels(ax1, ax2, f"{res['model']}, light {res['power_percent']:g} %")
        ax1.legend(fontsize="x-small")
    save_figure(fig, path)


def label_panels(ax1: Any, ax2: Any, title: str) -> None:
    """A pairs-resolved (``ax1``) and rods-split (``ax2``) panel pair: titles,
    axes and the 5 % line above which a method invents."""
    ax2.axhline(0.05, color="k", ls="--", lw=1, label="5 %: inventing above")
    ax1.set_title(f"{title}: pairs resolved", fontsize="small")
    ax2.set_title(f"{title}: matched rods split", fontsize="small")
    for ax in (ax1, ax2):
        ax.set_xlabel("separation (Rayleigh)")
        ax.set_ylim(-0.05, 1.05)


if __name__ == "__main__":
    main()
