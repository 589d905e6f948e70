"""Where a two-point verdict comes from: the dips themselves (issue 23, items 2, 3).

On demo runs at fresh seeds, per separation, the quartiles of the dip ratio (the
Rayleigh criterion's minimum over the smaller peak; <= 0.735 counts as two objects)
of the target band's pairs and of their matched rods, and the fraction counted as
two, in:

- ``noisy``: each model's restoration of the low-dose frame (what evaluate scores);
- ``clean``: its restoration of the low-dose frame's expectation (the noise-free
  photons): what the model draws from the signal alone.  A rod split here is split
  by the model's prior; one split only in ``noisy`` by the noise;
- ``reference`` and ``expected reference``: the reference frame and its
  expectation, what a restoration that predicts the reference exactly would show.

    python scripts/two_point_dips.py --specimen beads --seeds 801 802 \\
        --models src/pairscope/models/demo_x2.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from pairscope.io import open_run
from pairscope.live import bundled_model_path
from pairscope.metrics import RAYLEIGH_DIP_RATIO, rod_split, two_point_resolved
from pairscope.restore import StreamingRestorer, load_model
from pairscope.rig import rig_model_for_run
from pairscope.sim import ground_truth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo_runs import acquire

IMAGES = ("noisy", "clean", "reference", "expected reference")


def dips(model_path: Path, runs: list[Path], min_rayleigh: float) -> dict:
    """``{(kind, separation_rayleigh): {image: [dip, ...]}}`` for one model."""
    restorer = StreamingRestorer(load_model(model_path), device="cpu")
    out: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for path in runs:
        run = open_run(path)
        rig = rig_model_for_run(run)
        low_px = rig.lowdose.unbinned_pixel_size_um
        ref_px = rig.reference.unbinned_pixel_size_um
        assert low_px and ref_px, "a demo run's pixel sizes are known"
        ray = rig.optics.rayleigh_um
        low_cam, ref_cam = (run.info["detectors"][k] for k in ("lowdose", "reference"))
        for i, record in enumerate(run.records):
            pair = run[i]
            if pair.reference is None:
                continue
            low = {
                "noisy": restorer.restore_now(pair.lowdose),
                "clean": restorer.restore_now(
                    ground_truth.noise_free_lowdose(run.info, record, low_cam)
                ),
            }
            ref = {
                "reference": pair.reference.astype(np.float32),
                "expected reference": ground_truth.noise_free_reference(
                    run.info, record, ref_cam
                ),
            }
            for kind in ("pair", "rod"):
                for cam, px, images in ((low_cam, low_px, low), (ref_cam, ref_px, ref)):
                    for a, b, sep in ground_truth.targets_in_pixels(
                        run.info, record, cam, rods=kind == "rod"
                    ):
                        r = round(sep / ray, 3)
                        if r < min_rayleigh:
                            continue
                        for name, img in images.items():
                            result = (
                                rod_split(img, a, b, sep / px)
                                if kind == "rod"
                                else two_point_resolved(img, a, b)
                            )
                            out[(kind, r)][name].append(result.dip)
    return out


def summarise(found: dict) -> list[dict]:
    rows = []
    for (kind, sep), images in sorted(found.items()):
        row: dict = {"object": kind, "separation_rayleigh": sep}
        for name in IMAGES:
            d = np.asarray(images[name])
            row[name] = {
                "n": int(d.size),
                "two": round(float(np.mean(d <= RAYLEIGH_DIP_RATIO)), 3),
                "dip_quartiles": [
                    round(float(q), 3) for q in np.percentile(d, [25, 50, 75])
                ],
            }
        rows.append(row)
    return rows


def markdown(model: str, rows: list[dict]) -> str:
    lines = [
        "",
        f"{model}: counted as two / dip ratio quartiles (25/50/75 %)",
        "",
        "| object | separation (R) | " + " | ".join(IMAGES) + " |",
        "|---" * (2 + len(IMAGES)) + "|",
    ]
    for r in rows:
        cells = [
            f"{r[n]['two']:.0%} / {'/'.join(f'{q:.2f}' for q in r[n]['dip_quartiles'])}"
            for n in IMAGES
        ]
        lines.append(
            f"| {r['object']} | {r['separation_rayleigh']:g} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[801, 802])
    p.add_argument("--frames", type=int, default=10, help="pairs per run")
    p.add_argument("--power", type=float, default=100.0, help="light power, percent")
    p.add_argument("--binning", type=int, default=2)
    p.add_argument("--specimen", choices=("cells", "beads"), default="cells")
    p.add_argument("--models", type=Path, nargs="*", default=[],
                   help="model files (default: the bundled model)")  # fmt: skip
    p.add_argument("--min-rayleigh", type=float, default=1.2,
                   help="separations below this are left out")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON of every row")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    models = args.models or [bundled_model_path(args.binning)]
    t0 = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            acquire(Path(tmp), s, frames=args.frames, binning=args.binning,
                    props=[("LED", "Power_percent", args.power)],
                    specimen=args.specimen)
            for s in args.seeds
        ]  # fmt: skip
        for path in models:
            rows = summarise(dips(path, runs, args.min_rayleigh))
            results.append({"model": path.name, "rows": rows})
            print(markdown(path.name, rows))
    seconds = round(time.monotonic() - t0, 1)
    print(f"\n{seconds} s: `python {' '.join(sys.argv)}`")
    if args.out:
        summary = {"command": " ".join(["python", *sys.argv]), "seconds": seconds,
                   "specimen": args.specimen, "power_percent": args.power,
                   "seeds": args.seeds, "frames": args.frames, "results": results}  # fmt: skip
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
