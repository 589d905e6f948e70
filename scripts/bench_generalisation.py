"""pairscope's default training recipe vs CARE on specimens unlike the training set.

Training data come from a second, independent forward model
(``heldout_forward_model.py``: another PSF, other cameras, other specimen families
than ``pairscope.sim``), enter pairscope the way a user's data do (``pairscope
import``), and are trained with ``pairscope train`` and its defaults.  The CARE
baseline is CAREamics' CARE (U-Net, MAE, its defaults) trained on the same pairs with
the low-dose frames bicubic-upsampled to the reference grid, under the same
wall-clock budget and threads (``care_baseline.py``, run in its own virtual
environment, because CAREamics pins another torch).

Scored on held-out sets of other structure families, photon levels and seeds:
PSNR against the noise-free reference (no affine fit, data range of the truth), and
the two-point test (pairs at 0.8-2 Rayleigh distances) against bicubic and the truth.
Every method restores into the low-dose camera's frame, as ``pairscope train`` and
``evaluate`` register the pairs (CARE trains on the same registered pairs), so the
truth is rendered in that frame (it differs from the reference camera's only in
``heldout_forward_model_b.py``, whose cameras are 1/4 pixel apart).
``--split dev`` sets are for choosing levers; ``--split test`` sets are reported;
``--split retest`` draws the test sets again from fresh seeds (for a test split that
has been reported several times).
``--forward-model b`` (``heldout_forward_model_b.py``: a vectorial PSF, sCMOS cameras
with pixel-wise maps, yet other families, bead pairs with matched rods) has test
splits only: it is never tuned on.

    python scripts/bench_generalisation.py --split test --minutes 15 \
        --care-python /work/care-venv/bin/python --markdown
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pairscope._progress import progress  # noqa: E402
from pairscope.io import open_run  # noqa: E402
from pairscope.io.calibration import Registration, apply_registration  # noqa: E402
from pairscope.io.dataset import run_registration  # noqa: E402
from pairscope.metrics import rod_split, two_point_resolved  # noqa: E402
from pairscope.offline import restore  # noqa: E402


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack(frames).astype(np.uint16)


#: the held-out forward models (modules beside this script), by --forward-model
FORWARD_MODELS = {"a": "heldout_forward_model", "b": "heldout_forward_model_b"}


def make_training_set(
    fwd: ModuleType, n: int, folder: Path, families: tuple[str, ...]
) -> tuple[Path, Path]:
    """``n`` independent snapshots, the training families in turn, as two stacks."""
    fm = fwd.ForwardModel()
    lows, refs = [], []
    for i in progress(range(n), desc="rendering training pairs", leave=False):
        fr = fm.render(families[i % len(families)], fwd.SEED_BASE["train"] + i)
        lows.append(fr.lowdose)
        refs.append(fr.reference)
    low, ref = folder / "train_low.tif", folder / "train_ref.tif"
    tifffile.imwrite(low, _stack(lows))
    tifffile.imwrite(ref, _stack(refs))
    return low, ref


def registered_references(run: Path, folder: Path) -> Path:
    """The training references resampled onto the low-dose camera's frame with the
    registration ``pairscope train`` estimates from the imported run: CARE trains
    on the same registered pairs, and every method restores into that frame."""
    opened = open_run(run)
    reg = run_registration(opened) or Registration()
    path = folder / "train_ref_registered.tif"
    refs = [
        apply_registration(opened[i].reference, reg) for i in opened.with_reference()
    ]
    tifffile.imwrite(path, np.stack(refs).astype(np.float32))
    return path


def import_options(fwd: ModuleType) -> list[str]:
    """``pairscope import`` camera options: the model's cameras' (mean) gains and
    offsets, as a user has them from a datasheet."""
    low, ref = fwd.LOW_CAMERA, fwd.REF_CAMERA
    return [
        "--offset", str(low.offset_adu), "--gain", str(low.gain_e_per_adu),
        "--reference-offset", str(ref.offset_adu),
        "--reference-gain", str(ref.gain_e_per_adu),
    ]  # fmt: skip


def lowdose_in_reference_units(
    fwd: ModuleType, low: np.ndarray, factor: int
) -> np.ndarray:
    """Low-dose ADU -> expected reference ADU above offset, per reference pixel of
    each low-dose pixel (the cameras' mean gains and offsets, the split)."""
    cam = fwd.LOW_CAMERA
    photons = (low.astype(np.float64) - cam.offset_adu) * (
        cam.gain_e_per_adu / cam.quantum_efficiency
    )
    ref_photons = photons * (fwd.SPLIT_REF / fwd.SPLIT_LOW) / factor**2
    return fwd.REF_CAMERA.expected_above_offset(ref_photons)


def dose_matched_bicubic(fwd: ModuleType, low: np.ndarray, factor: int) -> np.ndarray:
    """Low-dose ADU -> expected reference ADU above offset, bicubic to the fine grid."""
    adu = lowdose_in_reference_units(fwd, low, factor)
    t = torch.from_numpy(adu.astype(np.float32))[None, None]
    return F.interpolate(t, scale_factor=factor, mode="bicubic", align_corners=False)[
        0, 0
    ].numpy()


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((pred.astype(np.float64) - truth) ** 2))
    return 10 * np.log10(data_range**2 / mse)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--split", choices=("dev", "test", "retest"), default="dev")
    p.add_argument(
        "--forward-model", choices=tuple(FORWARD_MODELS), default="a",
        help="a: heldout_forward_model.py (issue 10); b: heldout_forward_model_b.py "
        "(issue 23: vectorial PSF, sCMOS maps, other families; test splits only)",
    )  # fmt: skip
    p.add_argument("--train-frames", type=int, default=128)
    p.add_argument(
        "--train-families", default=None,
        help="specimen families of the training set, comma-separated (default: the "
        "model's TRAIN_FAMILIES; a control: 'beads' trains on the held-out kind "
        "itself; use its own --work)",
    )  # fmt: skip
    p.add_argument("--frames", type=int, default=6, help="frames per held-out set")
    p.add_argument("--minutes", type=float, default=15.0, help="CARE's budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--recipe",
        action="append",
        default=None,
        metavar="NAME=OPTIONS",
        help="a `pairscope train` variant (levers), repeatable (default: "
        "pairscope=, the defaults)",
    )
    p.add_argument(
        "--care-python",
        type=Path,
        default=None,
        help="python of a venv with careamics (default: no CARE)",
    )
    p.add_argument(
        "--care-minutes",
        type=float,
        default=None,
        help="CARE's budget (default: pairscope's measured training time)",
    )
    p.add_argument(
        "--care-patience", type=int, default=None,
        help="CAREamics' early stopping patience (default: none, the whole budget)",
    )  # fmt: skip
    p.add_argument(
        "--self-ensemble", action="store_true",
        help="also score every model (CARE included) as the mean of its "
        "restorations of the eight flips and quarter turns (rows NAME+ensemble)",
    )  # fmt: skip
    p.add_argument("--work", type=Path, default=None, help="keep files here")
    p.add_argument(
        "--reuse-models",
        action="store_true",
        help="score a recipe's model already in --work instead of training it again",
    )
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the results")
    p.add_argument(
        "--replot", type=Path, default=None, metavar="JSON",
        help="only draw --plot (and --markdown) from a report written by --out",
    )  # fmt: skip
    args = p.parse_args()
    if args.replot is not None:
        report = json.loads(args.replot.read_text())
        if args.plot:
            plot(report, args.plot)
        if args.markdown:
            print(markdown(report))
        return
    torch.set_num_threads(args.threads)
    fwd = importlib.import_module(FORWARD_MODELS[args.forward_model])
    if args.forward_model == "b" and args.split == "dev":
        p.error("forward model b is never tuned on: it has test splits only")
    fm = fwd.ForwardModel()
    work = args.work or Path(tempfile.mkdtemp(prefix="generalisation-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    families = tuple((args.train_families or ",".join(fwd.TRAIN_FAMILIES)).split(","))
    low_tif, ref_tif = make_training_set(fwd, args.train_frames, work, families)
    run_parent = work / "runs"
    if not run_parent.exists():
        subprocess.run(
            ["pairscope", "import", "--lowdose", str(low_tif), "--reference",
             str(ref_tif), "--reference-pixel-um", str(fm.ref_pixel_um),
             "--binning", str(fm.binning), *import_options(fwd),
             "--out", str(run_parent), "--no-progress"],
            check=True,
        )  # fmt: skip
    run = next(run_parent.iterdir())
    care_ref_tif = registered_references(run, work)
    recipes = dict(r.split("=", 1) for r in args.recipe or ["pairscope="])
    models, train_minutes = {}, {}
    for name, options in recipes.items():
        models[name] = work / f"{name}.safetensors"
        if args.reuse_models and models[name].is_file():
            continue
        t0 = time.perf_counter()
        subprocess.run(
            ["pairscope", "train", str(run), "--out", str(models[name]), "--force",
             "--threads", str(args.threads), *options.split()],
            check=True, env=env,
        )  # fmt: skip
        train_minutes[name] = (time.perf_counter() - t0) / 60
        print(f"{name}: trained in {train_minutes[name]:.1f} min", flush=True)
    train_s = 60 * max(train_minutes.values(), default=args.minutes)

    sets = {}
    for k, (family, photons) in enumerate(fwd.HELD_OUT):
        frames = [
            fm.render(family, seed, photons)
            for seed in fwd.held_out_seeds(args.split, k, args.frames)
        ]
        sets[f"{family}@{photons}"] = frames
    care_pred: dict[str, np.ndarray] = {}
    care_s = None
    if args.care_python is not None:
        inputs = []
        for name, frames in sets.items():
            path = work / f"test_{name.replace('@', '_')}_low.tif"
            tifffile.imwrite(path, _stack([f.lowdose for f in frames]))
            inputs.append(path)
        minutes = args.care_minutes or train_s / 60
        t0 = time.perf_counter()
        subprocess.run(
            [str(args.care_python), str(HERE / "care_baseline.py"),
             "--low", str(low_tif), "--ref", str(care_ref_tif),
             "--factor", str(fm.binning), "--minutes", f"{minutes:.3f}",
             "--threads", str(args.threads), "--work", str(work / "care"),
             *(["--patience", str(args.care_patience)] if args.care_patience else []),
             *(["--self-ensemble"] if args.self_ensemble else []),
             "--predict", *map(str, inputs)],
            check=True, env=env,
        )  # fmt: skip
        care_s = time.perf_counter() - t0
        for name, path in zip(sets, inputs, strict=True):
            for suffix in ("care", "care+ensemble")[: 1 + args.self_ensemble]:
                care_pred[f"{name}/{suffix}"] = tifffile.imread(
                    path.with_name(f"{path.stem}_{suffix}.tif")
                )

    px_per_r = fm.optics.rayleigh_um / fm.ref_pixel_um  # for the rods' split test
    shift = fm.camera_shift_ref_px
    results: dict[str, dict] = {}
    for name, frames in progress(sets.items(), desc="scoring", leave=False):
        truth = np.stack([f.truth_lowdose_frame for f in frames]).astype(np.float64)
        rng_ = float(truth.max() - truth.min())
        preds = {}
        for label, m in models.items():
            for ensemble in (False, True)[: 1 + args.self_ensemble]:
                key = f"{label}+ensemble" if ensemble else label
                preds[key] = (
                    np.stack(
                        [restore(m, f.lowdose, self_ensemble=ensemble) for f in frames]
                    )
                    - fwd.REF_CAMERA.offset_adu
                )
        preds["bicubic"] = np.stack(
            [dose_matched_bicubic(fwd, f.lowdose, fm.binning) for f in frames]
        )
        for key, pred in care_pred.items():
            if key.startswith(name + "/"):
                preds[key.split("/")[1]] = (
                    pred.astype(np.float64) - fwd.REF_CAMERA.offset_adu
                )
        row: dict = {"psnr": {m: psnr(v, truth, rng_) for m, v in preds.items()}}
        if frames[0].pairs:
            preds["truth"] = truth
            row["two_point"] = fractions(
                preds, frames, "pairs", shift,
                lambda img, a, b, _: two_point_resolved(img, a, b).resolved,
            )  # fmt: skip
        if getattr(frames[0], "rods", None):
            row["rods_split"] = fractions(
                preds, frames, "rods", shift,
                lambda img, a, b, sep: rod_split(img, a, b, sep * px_per_r).resolved,
            )  # fmt: skip
        results[name] = row
    report = {
        "forward_model": fwd.__name__,
        "split": args.split,
        "train_frames": args.train_frames,
        "train_families": families,
        "recipes": recipes,
        "train_minutes": train_minutes,
        "care_budget_minutes": None if care_s is None else minutes,
        "care_patience": args.care_patience,
        "care_minutes": None if care_s is None else care_s / 60,
        "self_ensemble": args.self_ensemble,
        "threads": args.threads,
        "scored_in": "the low-dose camera's frame (registered pairs)",
        "sets": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.markdown:
        print(markdown(report))
    if args.plot:
        plot(report, args.plot)


def fractions(
    preds: dict[str, np.ndarray],
    frames: list,
    targets: str,
    shift: tuple[float, float],
    hit: Callable[[np.ndarray, tuple, tuple, float], bool],
) -> dict[str, dict[str, float]]:
    """Per method and separation, the fraction of the frames' ``targets`` (``pairs``
    or ``rods``: (end, end, separation in Rayleigh), reference camera's pixels),
    moved by ``shift`` (x, y) into the low-dose camera's frame, for which ``hit``
    holds."""
    tally: dict[str, dict[float, list[bool]]] = {m: {} for m in preds}
    for m, imgs in preds.items():
        for img, fr in zip(imgs, frames, strict=True):
            for a, b, sep in getattr(fr, targets):
                a = (a[0] + shift[0], a[1] + shift[1])
                b = (b[0] + shift[0], b[1] + shift[1])
                tally[m].setdefault(sep, []).append(hit(img, a, b, sep))
    return {
        m: {str(s): float(np.mean(v)) for s, v in sorted(t.items())}
        for m, t in tally.items()
    }


def plot(report: dict, path: Path) -> None:
    """PSNR per held-out set, and the two-point curves per bead set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["sets"]
    beads = [n for n, r in sets.items() if "two_point" in r]
    fig, axes = plt.subplots(1, 1 + len(beads), figsize=(5 + 4.5 * len(beads), 5))
    ax = axes[0]
    methods = list(next(iter(sets.values()))["psnr"])
    names = [*methods, "truth"]
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = dict(zip(names, cmap.colors, strict=False))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        ax.bar([i + k * width for i in range(len(sets))],
               [r["psnr"][m] for r in sets.values()], width, label=m,
               color=colour[m])  # fmt: skip
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sets))], list(sets),
                  rotation=30, ha="right")  # fmt: skip
    lo = min(r["psnr"][m] for r in sets.values() for m in methods)
    ax.set_ylim(lo - 3, None)
    ax.set_ylabel("PSNR vs noise-free truth (dB)")
    for ax, name in zip(axes[1:], beads, strict=True):
        for m, t in sets[name]["two_point"].items():
            ax.plot([float(s) for s in t], list(t.values()), "o-", label=m,
                    color=colour.get(m))  # fmt: skip
        ax.set_xlabel("separation (Rayleigh distances)")
        ax.set_ylabel("fraction of pairs resolved")
        ax.set_title(f"two-point, {name}")
    handles, labels = axes[1 if beads else 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6),
               fontsize=8)  # fmt: skip
    fig.suptitle(f"held-out specimens ({report['split']} split)")
    fig.tight_layout(rect=(0, 0.04 * (1 + len(labels) // 6), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(report: dict) -> str:
    methods = list(next(iter(report["sets"].values()))["psnr"])
    first = methods[0]
    # pairscope's first recipe minus CARE, as each restores (and both ensembled)
    diffs = [
        (a, b)
        for a, b in ((first, "care"), (f"{first}+ensemble", "care+ensemble"))
        if a in methods and b in methods
    ]
    lines = ["| held-out set | " + " | ".join(f"{m} dB" for m in methods)
             + "".join(f" | {a} − {b}" for a, b in diffs) + " |",
             "|---" * (len(methods) + len(diffs) + 1) + "|"]  # fmt: skip
    for name, row in report["sets"].items():
        ps = row["psnr"]
        lines.append(f"| {name} | " + " | ".join(f"{ps[m]:.2f}" for m in methods)
                     + "".join(f" | {ps[a] - ps[b]:+.2f}" for a, b in diffs)
                     + " |")  # fmt: skip
    for name, row in report["sets"].items():
        for key, what in (
            ("two_point", "fraction of pairs resolved"),
            ("rods_split", "fraction of matched single rods split"),
        ):
            if key not in row:
                continue
            seps = list(next(iter(row[key].values())))
            lines += ["", f"{key.replace('_', ' ')}, {name} ({what})", "",
                      "| method | " + " | ".join(f"{s} R" for s in seps) + " |",
                      "|---" * (len(seps) + 1) + "|"]  # fmt: skip
            for m, t in row[key].items():
                lines.append(
                    f"| {m} | " + " | ".join(f"{t[s]:.2f}" for s in seps) + " |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
