"""An evaluation that cannot flatter: every row against one target, in one frame.

For every pair with a reference, the *target* is the reference resampled onto the
low-dose camera's frame with the camera registration (where the model's output
lives).  Every row is scored against that same target on the same crop: the model,
nearest / bilinear / bicubic upsampling of the offset-subtracted low-dose frame, and
on demo runs the *ceiling* (an independent second reference of the same instant,
resampled the same way) and the *ideal* (the simulator's noise-free reference,
resampled the same way: no prediction can beat it).

Protocol (stated in every report): the target is percentile-normalised (0.1 and
99.9 % map to 0 and 1), each row is least-squares affine-fitted to it (PSSR,
CAREamics), PSNR uses the fixed data range 1.0 (not the noisy target's extremes) and
SSIM a Gaussian window of sigma 1.5 px (11 px), K1 0.01, K2 0.03.  FRC against a
noisy reference measures *agreement*; it is reported beside the low-dose Nyquist.

Two-point resolution is a table per separation (µm and Rayleigh units): the
fraction of point pairs resolved (Rayleigh dip) by the model, every baseline and the
reference, and of their controls, matched single rods, split; 95 % Wilson intervals;
the ideal observer's bound for the run (the pairs resolvable from the low-dose frame
at <= 5 % rods split, from the rig model's photometry and PSF,
:mod:`pairscope.metrics._ideal_observer`); a method splitting more than 5 % of
the rods is inventing there, and a regression is flagged wherever the model resolves
fewer pairs than the best baseline or more than the reference (dips the reference
does not show), or invents.  Targets: the demo's bead pairs and rods, or a user file
(:data:`TARGETS_HELP`).  ``evaluation.json``'s ``two_point`` holds the table's rows
flat (one per separation and method); ``two_point_table`` the rest.

The trust monitor (:mod:`pairscope.trust`) checks every pair too and writes
``quality.jsonl`` into the output folder.  A model is refused for a run of another
binning, pixel size or camera; a run the model was trained on is named in the verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from ._progress import progress as progress_bar
from ._targets import (
    ROD_LENGTH_OVER_SEPARATION,
    TARGETS_HELP,
    XY,
    Target,
    TargetSpec,
    check_target_lengths,
    check_targets_fit,
    load_targets,
)
from .errors import PairscopeError
from .io import Run, open_run
from .io import layout as L
from .io.calibration import Registration, apply_registration, save_calibration
from .restore import (
    LoadedModel,
    StreamingRestorer,
    check_compatible,
    check_model_for_rig,
    load_model,
)
from .rig import RigModel, rig_model_for_run
from .sim import ground_truth
from .trust import (
    DATA_RANGE,
    QUALITY_FILE,
    SSIM_SIGMA_PX,
    TrustCalibration,
    TrustMonitor,
    calibration_for_run,
)
from .trust import registered_crop as crop_of  # the crop every score uses

__all__ = [
    "BASELINES",
    "PRACTICAL_DIFFERENCE",
    "PROTOCOL",
    "ROWS",
    "TARGETS_HELP",
    "ModelMismatchError",
    "TargetSpec",
    "check_model_for_run",
    "crop_of",
    "evaluate",
    "frame_rows",
    "load_targets",
    "manifest_sha256",
    "paired_difference",
    "reference_to_lowdose",
    "score_rows",
    "store_registration",
]

logger = logging.getLogger(__name__)

BASELINES: tuple[M.UpsampleMethod, ...] = ("nearest", "bilinear", "bicubic")
ROWS = ("model", *BASELINES, "ceiling", "ideal")

PROTOCOL = (
    "every row scored against the same target: the reference resampled onto the "
    "low-dose camera's frame (registration), same crop; target percentile-normalised "
    "(0.1-99.9 % -> 0-1), each row least-squares affine-fitted to it; PSNR data range "
    f"fixed at {DATA_RANGE:g}; SSIM Gaussian window sigma {SSIM_SIGMA_PX:g} px (11 px), "
    "K1 0.01, K2 0.03; baselines upsample the offset-subtracted low-dose frame"
)


#: smallest mean per-pair difference to bicubic called better or worse (stated in
#: the verdict): PSNR in dB, SSIM in its own units
PRACTICAL_DIFFERENCE = {"psnr": 0.1, "ssim": 0.005}
NO_DIFFERENCE = "no measurable difference"


class ModelMismatchError(PairscopeError, ValueError):
    """The model was trained for another binning, pixel size or camera."""


def reference_to_lowdose(xy: XY, reg: Registration, shape: tuple[int, int]) -> XY:
    """Map a reference pixel ``(x, y)`` to the low-dose camera's unbinned grid
    (the inverse of the registration convention of :mod:`pairscope.io.calibration`)."""
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    x = cx + (xy[0] - reg.shift_x_px - cx) / reg.scale
    y = cy + (xy[1] - reg.shift_y_px - cy) / reg.scale
    return (x, y)


def manifest_sha256(run: Run) -> str:
    """SHA-256 of the run's ``pairs.jsonl`` (what model files record)."""
    return hashlib.sha256((run.path / "pairs.jsonl").read_bytes()).hexdigest()


def check_model_for_run(loaded: LoadedModel, run: Run) -> list[str]:
    """Refuse ``loaded`` for ``run`` on another binning, pixel size or camera (the
    run's rig model: never a device's ``Gain`` property); return the warnings of
    :func:`pairscope.restore.check_model_for_rig` where it has any."""
    info = loaded.info
    rec = next(
        (r for r in run.records if r.get("reference") and r.get("lowdose")), None
    )
    if rec is None:
        raise ValueError(f"{run.path}: no pair with a reference frame to score")
    px = (rec.get("lowdose") or {}).get("pixel_size_um")
    try:
        check_compatible(
            info,
            expect_factor=run.factor,
            expect_pixel_size_um=float(px) if px else None,
            path=loaded.path,
        )
    except ValueError as e:
        raise ModelMismatchError(f"{run.path}: {e}") from None
    rig = _rig_model(run)
    warnings = _check_model_for_rig(loaded, rig, run)  # factor, pixel size, e-/ADU
    # the offset the model's fixed normalisation assumes (unknown: not compared)
    cam = getattr(info, "lowdose_camera", None)
    have, photometry = getattr(cam, "offset_adu", None), rig.lowdose.photometry
    offset = photometry.offset_adu
    if (
        have is not None
        and offset is not None
        and not math.isclose(have, offset, rel_tol=0.05, abs_tol=5.0)
    ):
        raise ModelMismatchError(
            f"model {info.name!r} was trained on a low-dose camera with offset "
            f"{have:g} but {run.path} has {offset:g} ADU ({photometry.source}: "
            f"{photometry.method or 'rig model'}): use a model trained on this "
            "camera, or fine-tune one (pairscope train --init)"
        )
    norm = info.input_norm
    if cam is None and norm.mode == "fixed" and (norm.low, norm.high) != (0.0, 1.0):
        # no camera recorded (format 1): the dark floor of the data must match the
        # input normalisation's (it sits at the camera offset)
        low = run[run.records.index(rec)].lowdose
        assert low is not None  # rec has a low-dose frame
        floor = float(np.percentile(low, info.input_norm.p_low))
        span = info.input_norm.high - info.input_norm.low
        if abs(floor - info.input_norm.low) > 0.25 * span:
            raise ModelMismatchError(
                f"{run.path}: the low-dose data's dark floor is {floor:.0f} ADU but "
                f"model {info.name!r} was trained with it at {info.input_norm.low:.0f} "
                "(another camera offset or gain): use a model trained on this camera"
            )
    return warnings


def _rig_model(run: Run) -> RigModel:
    """The run's rig model; a damaged or newer one is the run's problem, in one line."""
    try:
        return rig_model_for_run(run)
    except ValueError as e:
        raise ModelMismatchError(f"{run.path}: {e}") from None


def _check_model_for_rig(loaded: LoadedModel, rig: RigModel, run: Run) -> list[str]:
    """:func:`pairscope.restore.check_model_for_rig`'s warnings; its refusal is a
    :class:`ModelMismatchError` naming the run."""
    try:
        return check_model_for_rig(loaded.info, rig, path=loaded.path)
    except ValueError as e:
        raise ModelMismatchError(f"{run.path}: {e}") from None


def score_rows(
    rows: dict[str, np.ndarray], target: np.ndarray, pixel_size_um: float
) -> dict[str, dict[str, float]]:
    """PSNR, SSIM and FRC agreement of every row against one ``target`` (module doc)."""
    out = {}
    for name, img in rows.items():
        out[name] = {
            "psnr": M.psnr(img, target, data_range=DATA_RANGE, scale_invariant=True),
            "ssim": M.ssim(
                img,
                target,
                data_range=DATA_RANGE,
                scale_invariant=True,
                win_sigma=SSIM_SIGMA_PX,
            ),
            "frc_agreement_um": M.frc_resolution(
                M.frc_curve(img, target, pixel_size_um=pixel_size_um)
            ),
        }
    return out


def frame_rows(
    run: Run, index: int, cal: TrustCalibration, restored: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All rows of pair ``index`` and their one target, full frame, in the low-dose
    camera's frame (crop with :func:`crop_of`)."""
    pair = run[index]
    assert pair.lowdose is not None and pair.reference is not None
    reg = cal.registration
    target = apply_registration(pair.reference.astype(np.float32), reg)
    low = pair.lowdose.astype(np.float64) - cal.lowdose.offset_adu
    rows: dict[str, np.ndarray] = {"model": np.asarray(restored, np.float64)}
    for name in BASELINES:
        rows[name] = M.upsample(low, cal.factor, name)
    if ground_truth.is_demo_run(run.info):
        ref_label = run.info.get("detectors", {}).get("reference", "ReferenceCam")
        second = ground_truth.independent_reference(run.info, pair.metadata, ref_label)
        truth = ground_truth.noise_free_reference(run.info, pair.metadata, ref_label)
        rows["ceiling"] = apply_registration(second.astype(np.float32), reg)
        rows["ideal"] = apply_registration(truth, reg)
    return rows, target.astype(np.float64)


def evaluate(
    model: LoadedModel | str | Path,
    runs: Sequence[str | Path | Run],
    out: str | Path,
    *,
    max_pairs: int | None = None,
    targets: TargetSpec | Sequence[Target] | None = None,
    rayleigh_um: float | None = None,
    self_ensemble: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` and the baselines on ``runs``; write JSON, PNGs, Markdown and
    ``quality.jsonl`` into ``out`` (module doc).  ``self_ensemble`` scores the
    model as ``pairscope restore --self-ensemble`` restores."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if targets is not None and not isinstance(targets, TargetSpec):
        targets = TargetSpec(every=tuple(targets))
    out = Path(out)
    opened = [r if isinstance(r, Run) else open_run(r) for r in runs]
    for run in opened:
        for warning in check_model_for_run(loaded, run):
            logger.warning("%s: %s", run.path, warning)
    trained = {t.sha256: t.path for t in loaded.info.trained_on}
    training_runs = [str(r.path) for r in opened if manifest_sha256(r) in trained]
    jobs, sequential = [], 0
    for run in opened:
        usable = run.same_instant_pairs()
        sequential += len(run.with_reference()) - len(usable)
        jobs += [(run, i) for i in usable[:max_pairs]]
    if not jobs:
        raise ValueError(
            "No pair with a reference of the same instant in these runs: nothing to "
            "score (sequential pairs, or frames of different triggers, see two "
            "instants; acquire with a rig, e.g. hardware_configs/demo_rig.yaml)."
        )
    if targets is not None:  # before any work and before the output folder
        for run in {id(r): r for r, _ in jobs}.values():
            first = next(i for r, i in jobs if r is run)
            reference = run[first].reference
            assert reference is not None
            check_targets_fit(targets, reference.shape[-2:], str(run.path))
            ref_px = _rig_model(run).reference.unbinned_pixel_size_um
            if ref_px is not None:
                check_target_lengths(targets, ref_px)
    out.mkdir(parents=True, exist_ok=True)
    (out / QUALITY_FILE).unlink(missing_ok=True)
    restorer = StreamingRestorer(loaded, device="auto", self_ensemble=self_ensemble)
    monitor = TrustMonitor(out)
    per_frame: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in ROWS}
    tally = M.TwoPointTally()
    observers: dict[str, M.IdealObserver | None] = {}
    no_ideal: dict[str, str] = {}
    grid_um: dict[str, float | None] = {}  # a target-grid pixel, µm
    calibrations: dict[str, TrustCalibration] = {}
    example: dict[str, Any] = {}
    ray = rayleigh_um or _rig_model(opened[0]).optics.rayleigh_um
    pixel_um: dict[str, float] = {}
    pixel_sizes: dict[str, tuple[float, float]] = {}
    for run, i in progress_bar(
        jobs, desc="evaluating", unit="pair", disable=not progress
    ):
        key = str(run.path)
        if key not in calibrations:
            calibrations[key] = calibration_for_run(run)
            store_registration(run, calibrations[key].registration)
            pixel_sizes[key] = _pixel_sizes(run, run.records[i], run.factor)
            rig = _rig_model(run)
            observers[key], why = M.ideal_observer_for_rig(rig, run.factor)
            grid_um[key] = rig.lowdose.unbinned_pixel_size_um
            if why:
                no_ideal[key] = why
        cal = calibrations[key]
        monitor.calibration = cal
        pair = run[i]
        restored = restorer.restore_now(pair.lowdose)
        rows, target = frame_rows(run, i, cal, restored)
        crop = crop_of(cal, target.shape)
        px, low_px = pixel_sizes[key]
        pixel_um = {"reference": px, "lowdose": low_px}
        scores = score_rows({k: v[crop] for k, v in rows.items()}, target[crop], px)
        for name, s in scores.items():
            for metric, value in s.items():
                per_frame[name][metric].append(value)
        check = monitor.check(pair.index, restored, pair.lowdose, pair.reference)
        if len(opened) > 1:
            monitor.results[-1]["run"] = key
        frame_targets = _frame_targets(run, pair.metadata, cal, target.shape, targets)
        images = {m: rows[m] for m in ("model", *BASELINES)} | {"reference": target}
        observer = observers[key]
        for p1, p2, sep in frame_targets:
            tally.add(
                sep,
                {
                    m: M.two_point_resolved(img, p1, p2).resolved
                    for m, img in images.items()
                },
            )
            if observer is not None:
                observer.add(pair.lowdose, p1, p2, sep)
        grid_px = grid_um[key]
        for a, b, sep in _frame_targets(
            run, pair.metadata, cal, target.shape, targets, rods=True
        ):
            sep_px = (
                sep / grid_px
                if grid_px
                else math.dist(a, b) / ROD_LENGTH_OVER_SEPARATION
            )
            tally.add_rod(
                sep,
                {
                    m: M.rod_split(img, a, b, sep_px).resolved
                    for m, img in images.items()
                },
            )
        if not example:
            example = {
                "rows": rows,
                "target": target,
                "crop": crop,
                "px": px,
                "targets": frame_targets,
                "error_map": check.error_map,
            }
    trust = monitor.finish()
    tally.set_ideal(M.ideal_resolvable([o for o in observers.values() if o]))
    per_sep, regressions = tally.table(ray)
    report = _summarise(
        loaded,
        opened,
        per_frame,
        per_sep,
        regressions,
        len(jobs),
        training_runs,
        calibrations,
        {
            **trust.as_dict(),
            "coverage": monitor.coverage(),
            "structures": monitor.structures.summary(),
        },
        pixel_um,
        ray,
        targets is not None,
        no_ideal,
    )
    report["pairs_not_same_instant_skipped"] = sequential
    report["model"]["self_ensemble"] = self_ensemble
    _write_outputs(out, report, per_frame, example, loaded)
    return report


def store_registration(run: Run, reg: Registration) -> Path | None:
    """Keep the registration evaluate used with ``run`` (its ``calibration.json``,
    as ``pairscope calibrate`` writes it) where the run has none; an existing
    calibration is never replaced.  A run that cannot be written to gets a
    warning, not an error.  Returns the file written, if any."""
    if (run.path / L.CALIBRATION).exists():
        return None
    try:
        path = save_calibration(
            run.path,
            reg,
            source="pairscope evaluate (central 128 px of up to 8 pairs of one "
            "instant; pairscope calibrate fits whole frames)",
        )
    except OSError as e:
        logger.warning(
            "%s: the camera registration was not stored (%s); 'pairscope "
            "calibrate %s' stores one",
            run.path,
            e.strerror or e,
            run.path,
        )
        return None
    logger.info("%s: camera registration stored in %s", run.path, path.name)
    return path


def _pixel_sizes(run: Run, record: dict[str, Any], factor: int) -> tuple[float, float]:
    """Reference and low-dose pixel sizes (µm): the rig model's, else the pair's
    record, else 1 (unknown: the FRC axis is then in pixels)."""
    rig = _rig_model(run)
    ref = rig.reference.pixel_size_um or (record.get("reference") or {}).get(
        "pixel_size_um"
    )
    px = float(ref or 1.0)
    low = rig.lowdose.pixel_size_um or (record.get("lowdose") or {}).get(
        "pixel_size_um"
    )
    return px, float(low or px * factor)


def _frame_targets(
    run: Run,
    record: dict[str, Any],
    cal: TrustCalibration,
    shape: tuple[int, int],
    given: TargetSpec | None,
    *,
    rods: bool = False,
) -> list[Target]:
    """Point pairs (or, with ``rods``, the rods' ends) of one pair in the low-dose
    camera's (unbinned) frame."""
    if given is not None:
        mapped = []
        number = int(record.get("pair", record["trigger_index"]))
        for a, b, sep in (
            given.rods_for_pair(number) if rods else given.for_pair(number)
        ):
            mapped.append(
                (
                    reference_to_lowdose(a, cal.registration, shape),
                    reference_to_lowdose(b, cal.registration, shape),
                    sep,
                )
            )
        return mapped
    if not ground_truth.is_demo_run(run.info):
        return []
    label = run.info["detectors"]["lowdose"]
    return ground_truth.targets_in_pixels(run.info, record, label, rods=rods)


def paired_difference(
    model: Sequence[float], baseline: Sequence[float], *, practical: float
) -> dict[str, Any]:
    """The model's per-pair difference to a baseline scored on the same pairs.

    ``mean`` and its 95 % Student-t interval ``ci95`` (``None`` for one pair);
    ``verdict`` is ``"better"`` or ``"worse"`` only where the interval excludes 0
    and ``|mean|`` reaches ``practical``, else :data:`NO_DIFFERENCE`.
    """
    d = np.array(
        [
            m - b
            for m, b in zip(model, baseline, strict=True)
            if math.isfinite(m) and math.isfinite(b)
        ]
    )
    out: dict[str, Any] = {"n_pairs": int(d.size), "practical": practical}
    if d.size == 0:
        return out | {"mean": None, "ci95": None, "verdict": "not measured"}
    mean = float(d.mean())
    ci = None
    if d.size > 1:
        from scipy.stats import t as student_t

        half = float(student_t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
        ci = [mean - half, mean + half]
    measured = abs(mean) >= practical and (ci is None or not ci[0] <= 0 <= ci[1])
    verdict = ("better" if mean > 0 else "worse") if measured else NO_DIFFERENCE
    return out | {"mean": mean, "ci95": ci, "verdict": verdict}


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _summarise(
    loaded,
    runs,
    per_frame,
    per_sep,
    regressions,
    n_pairs,
    training_runs,
    calibrations,
    trust,
    pixel_um,
    rayleigh_um,
    user_targets,
    no_ideal,
) -> dict[str, Any]:
    overall = {
        m: {k: _mean(v) for k, v in d.items()} for m, d in per_frame.items() if d
    }
    versus = {
        metric: paired_difference(
            per_frame["model"][metric],
            per_frame["bicubic"][metric],
            practical=practical,
        )
        for metric, practical in PRACTICAL_DIFFERENCE.items()
    }
    note = None
    if not per_sep:
        note = (
            "no two-point targets: this is not a demo run and no --targets file was "
            "given, so resolution was not tested"
        )
    return {
        "model": {
            "name": loaded.info.name,
            "sha256": loaded.sha256,
            "factor": loaded.info.factor,
        },
        "runs": [str(r.path) for r in runs],
        "pairs": n_pairs,
        "protocol": PROTOCOL,
        "data_range": DATA_RANGE,
        "ssim_window_sigma_px": SSIM_SIGMA_PX,
        "overall": overall,
        "versus_bicubic": versus,
        "frc": {
            "meaning": "agreement with a noisy reference (bounded by its noise), "
            "not resolution",
            "agreement_um": {m: o.get("frc_agreement_um") for m, o in overall.items()},
            "lowdose_nyquist_um": 2 * pixel_um.get("lowdose", math.nan),
            "reference_nyquist_um": 2 * pixel_um.get("reference", math.nan),
        },
        "two_point": M.TwoPointTally.rows(per_sep),
        "two_point_table": {
            "targets": "user file" if user_targets else "demo bead pairs and rods",
            "rayleigh_um": rayleigh_um,
            "rod_split_limit": M.ROD_SPLIT_LIMIT,
            "ideal_observer": "pairs the low-dose frame lets the ideal observer "
            f"resolve at <= {M.ROD_SPLIT_LIMIT:.0%} rods split (rig model's "
            "photometry and PSF, pair vs the closest single rod)",
            "ideal_observer_missing": no_ideal or None,
            "per_separation": per_sep,
            "note": note,
        },
        "regressions": regressions,
        # the table is the result; this summary of it (the smallest separation from
        # which on half the pairs or more are resolved) is kept for older scripts
        "smallest_resolved_separation_um": {
            m: M.smallest_resolved_separation(
                {r["separation_um"]: r["resolved_fraction"][m] or 0.0 for r in per_sep}
            )
            for m in M.TABLE_METHODS
        }
        if per_sep
        else {},
        "trained_on_these_runs": training_runs,
        "trust": trust,
        "calibration": {k: c.as_dict() for k, c in calibrations.items()},
        "per_frame": {m: dict(d) for m, d in per_frame.items() if d},
    }


def _write_outputs(out: Path, report, per_frame, example, loaded) -> None:
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, default=_json))
    series = {m: {k: list(v) for k, v in d.items()} for m, d in per_frame.items() if d}
    M.plot_metrics_over_time(series, out / "metrics_over_time.png")
    if example:
        crop, target, px = example["crop"], example["target"], example["px"]
        rows = {m: v[crop] for m, v in example["rows"].items()}
        curves = {
            m: M.frc_curve(img, target[crop], pixel_size_um=px)
            for m, img in rows.items()
        }
        M.plot_frc_curves(curves, out / "frc_curves.png")
        win = _crop_window(target.shape, example["targets"])
        fitted = {
            m: M.affine_fit(img, target)[win] for m, img in example["rows"].items()
        }
        crops = {"low-dose (nearest)": fitted["nearest"]}
        crops |= {m: fitted[m] for m in ("bilinear", "bicubic", "model")}
        crops["reference (registered)"] = target[win]
        M.plot_side_by_side(
            crops, out / "side_by_side.png", reference="reference (registered)"
        )
    per_sep = report["two_point_table"]["per_separation"]
    if per_sep:
        fractions = {
            m: {r["separation_um"]: r["resolved_fraction"][m] for r in per_sep}
            for m in M.TABLE_METHODS
        }
        rods = {
            m: {r["separation_um"]: r["rods_split_fraction"][m] for r in per_sep}
            for m in M.TABLE_METHODS
        }
        ray = report["two_point_table"]["rayleigh_um"] or min(fractions["model"]) / 0.5
        M.plot_two_point(
            fractions,
            out / "two_point.png",
            rayleigh_um=ray,
            rods_split=rods if any(r["n_rods"] for r in per_sep) else None,
            ideal={r["separation_um"]: r["ideal_resolvable"] for r in per_sep},
        )
    (out / "summary.md").write_text(_markdown(report, loaded))


def _json(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return float(v)


def _crop_window(
    shape: tuple[int, int], targets: list[Target], size: int = 128
) -> tuple[slice, slice]:
    """A crop around the first two-point targets (the interesting detail), or the centre."""
    h, w = shape
    if targets:
        cx = float(np.mean([t[0][0] for t in targets[:6]]))
        cy = float(np.mean([t[0][1] for t in targets[:6]]))
    else:
        cx, cy = w / 2, h / 2
    size = min(size, h, w)
    x0 = int(np.clip(cx - size / 2, 0, w - size))
    y0 = int(np.clip(cy - size / 2, 0, h - size))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def _fmt(v: float | None, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}"


def _versus_line(metric: str, d: dict[str, Any], nd: int, unit: str) -> str:
    """One verdict line on :func:`paired_difference`'s result against bicubic."""
    if d["mean"] is None:
        return f"- {metric}: not measured (no finite scores)."
    ci = d["ci95"]
    spread = (
        f"95 % interval [{ci[0]:+.{nd}f}, {ci[1]:+.{nd}f}]{unit} over "
        f"{d['n_pairs']} pairs"
        if ci is not None
        else "one pair, no interval"
    )
    figures = f"{d['mean']:+.{nd}f}{unit}, {spread}"
    if d["verdict"] == NO_DIFFERENCE:
        return (
            f"- {metric}: no measurable difference between the model and bicubic "
            f"({figures}; a difference counts when its interval excludes 0 and it "
            f"reaches {d['practical']:g}{unit})."
        )
    word = "better" if d["verdict"] == "better" else "WORSE"
    return f"- {metric}: the model is {word} than bicubic ({figures})."


def _two_point_cell(row: dict[str, Any], method: str) -> str:
    """``resolved [ci] / split [ci]`` of one method at one separation."""

    def part(value: float | None, ci: list[float]) -> str:
        if value is None:
            return "–"
        return f"{value:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]"

    pairs = part(row["resolved_fraction"][method], row["ci95"][method])
    rods = part(row["rods_split_fraction"][method], row["rods_ci95"][method])
    return f"{pairs} / {rods}{' !' if row['inventing'][method] else ''}"


def _markdown(report: dict[str, Any], loaded: LoadedModel) -> str:
    o = report["overall"]
    frc = report["frc"]
    lines = [
        f"# Evaluation of `{loaded.info.name}` ({report['pairs']} pairs"
        f"{', self-ensemble of 8' if report['model'].get('self_ensemble') else ''})",
        "",
        f"Protocol: {report['protocol']}.",
        "",
        "| row | PSNR (dB) | SSIM | FRC agreement (µm) |",
        "|---|---|---|---|",
    ]
    for m in ROWS:
        if m in o:
            lines.append(
                f"| {m} | {_fmt(o[m]['psnr'])} | {_fmt(o[m]['ssim'], 3)} | "
                f"{_fmt(o[m]['frc_agreement_um'], 3)} |"
            )
    lines += [
        "",
        f"FRC is agreement with a noisy reference, not resolution: the low-dose "
        f"Nyquist is {_fmt(frc['lowdose_nyquist_um'], 3)} µm, the reference's "
        f"{_fmt(frc['reference_nyquist_um'], 3)} µm.",
        "",
        "## Two-point resolution",
        "",
        "Per method: pairs resolved / matched single rods split (95 % intervals); "
        f"a method splitting more than {M.ROD_SPLIT_LIMIT:.0%} of the rods invents "
        "(marked !). Ideal: the pairs the ideal observer resolves from the low-dose "
        f"frame at <= {M.ROD_SPLIT_LIMIT:.0%} rods split.",
        "",
    ]
    tp = report["two_point_table"]
    if tp["note"]:
        lines.append(f"Not tested: {tp['note']}.")
    else:
        lines.append(
            "| separation µm (Rayleigh) | pairs, rods | ideal | "
            + " | ".join(M.TABLE_METHODS)
            + " | regression |"
        )
        lines.append("|---" * (len(M.TABLE_METHODS) + 4) + "|")
        for r in tp["per_separation"]:
            cells = [_two_point_cell(r, m) for m in M.TABLE_METHODS]
            ray = r["separation_rayleigh"]
            ideal = r["ideal_resolvable"]
            lines.append(
                f"| {r['separation_um']:.3f} ({_fmt(ray)}) | {r['n_pairs']}, "
                f"{r['n_rods']} | {'–' if ideal is None else f'{ideal:.0%}'} | "
                + " | ".join(cells)
                + f" | {'YES' if r['regression'] else 'no'} |"
            )
        for role, why in (tp.get("ideal_observer_missing") or {}).items():
            lines.append(f"\nIdeal observer not computed for {role}: {why}.")
    lines += ["", "## Verdict", ""]
    if report["trained_on_these_runs"]:
        lines.append(
            "- TRAINING DATA: the model was trained on "
            + ", ".join(report["trained_on_these_runs"])
            + ": these scores are not a test of generalisation."
        )
    lines.append(_versus_line("PSNR", report["versus_bicubic"]["psnr"], 2, " dB"))
    lines.append(_versus_line("SSIM", report["versus_bicubic"]["ssim"], 3, ""))
    for r in report["regressions"]:
        lines.append(
            f"- REGRESSION at {r['separation_um']:.3f} µm "
            f"({_fmt(r['separation_rayleigh'])} Rayleigh): {r['reason']}."
        )
    if not tp["note"] and not report["regressions"]:
        lines.append("- Two-point: no regression at any tested separation.")
    if "ceiling" in o:
        lines.append(
            f"- Ceiling (an independent reference of the same instant, same target): "
            f"{_fmt(o['ceiling']['psnr'])} dB; a noise-free prediction can score above it."
        )
    if "ideal" in o:
        lines.append(
            f"- Ideal (the noise-free truth, same target): {_fmt(o['ideal']['psnr'])} dB, "
            f"no prediction can do better; the model is "
            f"{o['ideal']['psnr'] - o['model']['psnr']:.2f} dB below it."
        )
    t = report["trust"]
    v = t["verdicts"]
    lines.append(
        f"- Trust monitor (quality.jsonl): {t['checked']} pairs checked, ok "
        f"{v.get('ok', 0)}, warn {v.get('warn', 0)}, alarm {v.get('alarm', 0)}."
    )
    cov = t.get("coverage") or {}
    if cov.get("heldout") is not None:
        lines.append(
            f"- Trust intervals (alpha {cov['alpha']:g}): held-out coverage "
            f"{cov['heldout']:.3f} on {cov['pairs']} pairs (target {cov['target']:.2f})."
        )
    elif cov:
        lines.append(f"- Trust intervals: {cov.get('why', 'not calibrated')}.")
    st = t.get("structures") or {}
    if st.get("invented_mean") is not None or st.get("lost_mean") is not None:
        lines.append(
            f"- Structures at the Rayleigh scale over {st['pairs']} reference pairs: "
            f"invented {_fmt(st['invented_mean'], 3)} (risk bound "
            f"{_fmt(st['invented_bound'], 3)}), lost {_fmt(st['lost_mean'], 3)} "
            f"(bound {_fmt(st['lost_bound'], 3)}); {st['flagged_pairs']} pairs at or "
            f"above the tolerance {st['tolerance']:.0%}"
            + (f"; FLAGGED: {', '.join(st['flagged'])}" if st["flagged"] else "")
            + (
                f"; certified at {st['tolerance']:.0%}"
                if st["certified"]
                else "; a bound above the tolerance: not certified"
            )
            + "."
        )
    return "\n".join(lines) + "\n"
