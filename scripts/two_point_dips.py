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

With ``--soften SIGMA ...`` each noisy restoration is also scored after a Gaussian
blur of SIGMA reference pixels (``noisy, softened SIGMA``): whether a restoration
made to do less, uniformly, trades its false splits for fewer pairs than bicubic.

With ``--by-grid`` each row is split by where the target's midpoint sits in its
binned low-dose pixel (within a quarter pixel of the centre on both axes, on one,
on neither: ``centre``, ``edge``, ``corner``): the low-dose frame samples a close
pair differently there.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from pairscope.io import open_run
from pairscope.live import bundled_model_path
from pairscope.metrics import RAYLEIGH_DIP_RATIO, rod_split, two_point_resolved
from pairscope.restore import StreamingRestorer, load_model
from pairscope.rig import rig_model_for_run
from pairscope.sim import ground_truth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo_runs import acquire

XY = tuple[float, float]

IMAGES = ("noisy", "clean", "reference", "expected reference")
#: where a target's midpoint sits on the binned low-dose grid (``--by-grid``)
GRID_PLACES = ("centre", "edge", "corner")


def grid_place(a: XY, b: XY, binning: int) -> str:
    """Where the midpoint of ``a`` and ``b`` (unbinned pixels of the low-dose camera)
    lies in its binned pixel: within a quarter pixel of the centre on both axes
    (``centre``), on neither (``corner``), or on one (``edge``)."""
    mid = (np.asarray(a) + np.asarray(b)) / 2
    phase = ((mid + 0.5) / binning - 0.5) % 1  # 0: a binned pixel's centre
    near = np.minimum(phase, 1 - phase) < 0.25
    return GRID_PLACES[2 - int(near.sum())]


def dips(
    model_path: Path,
    runs: list[Path],
    min_rayleigh: float,
    binning: int,
    by_grid: bool = False,
    soften: Sequence[float] = (),
) -> dict:
    """``{(kind, separation_rayleigh, place): {image: [dip, ...]}}`` for one model;
    ``place`` is where the target sits on the binned grid (:func:`grid_place`) with
    ``by_grid``, else ``"all"``."""
    restorer = StreamingRestorer(load_model(model_path), device="cpu")
    out: dict[tuple[str, float, str], dict[str, list[float]]] = defaultdict(
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
        to_low = {low_cam: lambda xy: xy, ref_cam: _onto(run.info, ref_cam, low_cam)}
        for i, record in enumerate(run.records):
            pair = run[i]
            if pair.reference is None:
                continue
            noisy = restorer.restore_now(pair.lowdose)
            low = {
                "noisy": noisy,
                "clean": restorer.restore_now(
                    ground_truth.noise_free_lowdose(run.info, record, low_cam)
                ),
            } | {softened(s): gaussian_filter(noisy, s) for s in soften}
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
                        place = (
                            grid_place(to_low[cam](a), to_low[cam](b), binning)
                            if by_grid
                            else "all"
                        )
                        for name, img in images.items():
                            result = (
                                rod_split(img, a, b, sep / px)
                                if kind == "rod"
                                else two_point_resolved(img, a, b)
                            )
                            out[(kind, r, place)][name].append(result.dip)
    return out


def softened(sigma: float) -> str:
    """The image name of the noisy restoration blurred by ``sigma`` reference pixels."""
    return f"noisy, softened {sigma:g}"


def _onto(info: dict, camera: str, other: str) -> Callable[[XY], XY]:
    """Unbinned pixel coordinates of ``camera`` to those of ``other`` (the demo's
    geometry: the same stage position, each camera's offset and pixel size)."""
    g, h = ground_truth.geometry(info, camera), ground_truth.geometry(info, other)
    return lambda xy: h.to_pixels(g.to_um(xy))


def summarise(found: dict) -> list[dict]:
    rows = []
    for (kind, sep, place), images in sorted(found.items()):
        row: dict = {"object": kind, "separation_rayleigh": sep, "grid": place}
        for name in [*IMAGES, *(n for n in images if n not in IMAGES)]:
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
    names = [k for k in rows[0] if k not in ("object", "separation_rayleigh", "grid")]
    lines = [
        "",
        f"{model}: counted as two / dip ratio quartiles (25/50/75 %)",
        "",
        "| object | separation (R) | grid | " + " | ".join(names) + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for r in rows:
        cells = [
            f"{r[n]['two']:.0%} / {'/'.join(f'{q:.2f}' for q in r[n]['dip_quartiles'])}"
            for n in names
        ]
        lines.append(
            f"| {r['object']} | {r['separation_rayleigh']:g} | {r['grid']} | "
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
    p.add_argument("--by-grid", action="store_true",
                   help="split each row by where the target's midpoint sits in its "
                   "binned low-dose pixel: centre, edge or corner")  # fmt: skip
    p.add_argument("--soften", type=float, nargs="*", default=[], metavar="SIGMA",
                   help="also score each noisy restoration blurred by a Gaussian of "
                   "SIGMA reference pixels")  # fmt: skip
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
            found = dips(
                path, runs, args.min_rayleigh, args.binning, args.by_grid, args.soften
            )
            rows = summarise(found)
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
