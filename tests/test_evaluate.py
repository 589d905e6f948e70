"""`pairscope evaluate`: one target per frame for every row, the two-point table,
user targets through the registration, refusals, on real demo runs and the real model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pairscope
from pairscope import metrics as M
from pairscope.cli import main
from pairscope.evaluate import (
    NO_DIFFERENCE,
    ModelMismatchError,
    _versus_line,
    crop_of,
    evaluate,
    frame_rows,
    manifest_sha256,
    paired_difference,
    reference_to_lowdose,
    score_rows,
)
from pairscope.io.calibration import Registration, load_registration, save_calibration
from pairscope.live import bundled_model_path
from pairscope.restore import (
    CameraModel,
    ModelInfo,
    StreamingRestorer,
    TrainedRun,
    default_preview_network,
    load_model,
    loaded_from_network,
)
from pairscope.sim import ground_truth
from pairscope.sim._specimen import Specimen
from pairscope.trust import calibration_for_run

from ._demo_rig import acquire_rig_run

METHODS = {"model", "nearest", "bilinear", "bicubic", "reference"}


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A specimen seed the model never saw, with the two-point targets in view."""
    run = acquire_rig_run(
        tmp_path_factory.mktemp("eval"), frames=3, seed=777, sensor=512
    )
    # this test's own run: store the registration (from pairs of one instant)
    save_calibration(run, calibration_for_run(pairscope.open_run(run)).registration)
    return run


@pytest.fixture(scope="module")
def report(fresh_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("report")
    model = load_model(bundled_model_path(2), expect_factor=2, expect_pixel_size_um=0.2)
    return evaluate(model, [fresh_run], out, progress=False), out


def test_two_point_geometry_varies_per_seed_and_is_new_to_the_model() -> None:
    def angle(t) -> float:
        d = np.subtract(t.p2_um, t.p1_um)
        return float(np.degrees(np.arctan2(d[1], d[0])) % 180)

    trained = [t for s in (1, 2, 3) for t in Specimen(s).targets]  # the model's seeds
    fresh = Specimen(777).targets
    assert len({round(angle(t)) for t in fresh}) > 12  # not 4 fixed angles any more
    for t in fresh:  # no fresh pair sits where, and at the angle, a training pair did
        for u in trained:
            same_place = np.hypot(*np.subtract(t.p1_um, u.p1_um)) < 0.1
            assert not (same_place and abs(angle(t) - angle(u)) < 2)


def test_ground_truth_matches_what_the_cameras_saw(fresh_run: Path) -> None:
    run = pairscope.open_run(fresh_run)
    pair, record = run[0], run.records[0]
    truth = ground_truth.noise_free_reference(run.info, record)
    residual = pair.reference.astype(float) - truth
    assert abs(residual.mean()) < 0.05 * truth.std()  # unbiased: only noise is left
    low_truth = ground_truth.noise_free_lowdose(run.info, record)
    assert low_truth.shape == pair.lowdose.shape  # binned, as the camera read
    low_residual = pair.lowdose.astype(float) - low_truth
    assert abs(low_residual.mean()) < 0.05 * low_truth.std()
    assert np.corrcoef(pair.lowdose.ravel(), low_truth.ravel())[0, 1] > 0.5
    targets = ground_truth.targets_in_pixels(run.info, record, "ReferenceCam")
    assert len(targets) == 24
    for (x1, y1), _, _ in targets:  # a bead sits where the ground truth says
        assert truth[round(y1), round(x1)] > 200  # offset is 100 ADU
    rods = ground_truth.targets_in_pixels(run.info, record, "ReferenceCam", rods=True)
    assert len(rods) == 24
    for (x1, y1), (x2, y2), _ in rods:  # and a rod, brightest at its centre
        centre = truth[round((y1 + y2) / 2), round((x1 + x2) / 2)]
        assert centre > 200
        assert centre >= truth[round(y1), round(x1)]  # its ends in the PSF's flank
    # a run acquired before rods existed is rebuilt without them
    old = {**run.info, "system_state": dict(run.info["system_state"])}
    old["system_state"][ground_truth.HUB] = {
        k: v
        for k, v in old["system_state"][ground_truth.HUB].items()
        if k != "MatchedRods"
    }
    assert ground_truth.targets_in_pixels(old, record, "ReferenceCam", rods=True) == []


def test_report_scores_every_row_and_tables_the_known_pairs(report) -> None:
    rep, out = report
    o = rep["overall"]
    assert o["model"]["psnr"] >= o["bicubic"]["psnr"] + 2.0
    assert o["ideal"]["psnr"] > o["model"]["psnr"]  # nothing beats the truth
    assert o["ideal"]["psnr"] > o["ceiling"]["psnr"]
    assert rep["data_range"] == 1.0 and rep["ssim_window_sigma_px"] == 1.5
    assert rep["frc"]["lowdose_nyquist_um"] == pytest.approx(0.4)
    # 3 pairs calibrate no interval: the report says so rather than a number
    coverage = rep["trust"]["coverage"]
    assert coverage["alpha"] == 0.1 and coverage["heldout"] is None
    assert "calibrating: 3 of 10" in coverage["why"]
    assert "Trust intervals: intervals calibrating" in (out / "summary.md").read_text()
    rows = rep["two_point_table"]["per_separation"]
    assert [r["separation_rayleigh"] for r in rows] == [0.5, 0.75, 1.0, 1.25, 1.5, 2.0]
    for r in rows:
        assert set(r["resolved_fraction"]) == METHODS
        assert set(r["rods_split_fraction"]) == METHODS
        assert r["n_pairs"] == rep["pairs"] * 4  # four pairs per separation a frame
        assert r["n_rods"] == rep["pairs"] * 4  # and a matched rod beside each
        assert r["separation_um"] == pytest.approx(
            r["separation_rayleigh"] * 0.2643, rel=1e-3
        )
        lo, hi = r["ci95"]["model"]
        assert lo <= r["resolved_fraction"]["model"] <= hi
    assert rows[0]["resolved_fraction"]["reference"] <= 0.1  # 0.5 Rayleigh: never
    assert rows[-1]["resolved_fraction"]["reference"] >= 0.9  # 2 Rayleigh: always
    # the reference splits no single rod: a dip in one is invention, not resolution
    assert sum(r["rods_split_fraction"]["reference"] for r in rows) == 0
    # the ideal observer: at chance (5 % of pairs at 5 % rods split) at half a
    # Rayleigh distance, every pair at two, rising in between
    ideal = [r["ideal_resolvable"] for r in rows]
    assert ideal[0] < 0.15 and ideal[-1] > 0.95
    assert ideal == sorted(ideal)
    assert all(0.05 <= v <= 1.0 for v in ideal)
    assert 1.6 <= rows[-1]["ideal"]["closest_rod_over_separation"] <= 2.0
    # evaluation.json's two_point: the table flat, a row per separation and method
    flat = rep["two_point"]
    assert len(flat) == len(rows) * len(METHODS)
    for row in flat:
        assert {
            "separation_rayleigh",
            "method",
            "pairs_resolved",
            "rods_split",
            "ideal_resolvable",
        } <= set(row)
        table_row = rows[
            [r["separation_rayleigh"] for r in rows].index(row["separation_rayleigh"])
        ]
        assert row["pairs_resolved"] == table_row["resolved_fraction"][row["method"]]
        assert row["rods_split"] == table_row["rods_split_fraction"][row["method"]]
        assert row["inventing"] == (row["rods_split"] > 0.05)
    assert isinstance(rep["regressions"], list)
    for reg in rep["regressions"]:
        row = next(r for r in rows if r["separation_um"] == reg["separation_um"])
        assert row["regression"]
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["two_point_table"]["per_separation"] == json.loads(json.dumps(rows))
    assert saved["two_point"] == json.loads(json.dumps(flat))
    lines = (out / "quality.jsonl").read_text().splitlines()
    assert len(lines) == rep["pairs"] >= 2
    assert all(json.loads(ln)["verdict"] == "ok" for ln in lines), lines
    for name in ("summary.md", "two_point.png", "side_by_side.png", "quality.png"):
        assert (out / name).stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "not resolution" in summary
    versus = rep["versus_bicubic"]["psnr"]
    assert versus["verdict"] == "better" and versus["n_pairs"] == rep["pairs"]
    assert versus["ci95"][0] > 0.1  # the whole interval clears the threshold
    assert "- PSNR: the model is better than bicubic (+" in summary
    assert "95 % interval [+" in summary


@pytest.mark.parametrize(
    ("model", "verdict"),
    [
        ([30.05, 30.10, 30.00, 30.05], NO_DIFFERENCE),  # +0.05 dB: under 0.1 dB
        ([31.0, 29.4, 30.9, 29.5], NO_DIFFERENCE),  # +0.2 dB but 0 is in the interval
        ([31.0, 31.2, 30.9, 31.1], "better"),
        ([29.0, 28.8, 29.1, 28.9], "worse"),
        ([30.5], "better"),  # one pair: no interval, the threshold alone
        ([30.05], NO_DIFFERENCE),
    ],
)
def test_a_difference_within_its_uncertainty_is_not_called_better(
    model: list[float], verdict: str
) -> None:
    bicubic = [30.0] * len(model)
    d = paired_difference(model, bicubic, practical=0.1)
    assert d["verdict"] == verdict
    assert d["mean"] == pytest.approx(np.mean(model) - 30.0)
    line = _versus_line("PSNR", d, 2, " dB")
    if verdict == NO_DIFFERENCE:
        assert "no measurable difference" in line and "better" not in line
        assert "reaches 0.1 dB" in line
    else:
        assert ("better" if verdict == "better" else "WORSE") in line
    if len(model) > 1:
        lo, hi = d["ci95"]
        assert lo < d["mean"] < hi and f"over {len(model)} pairs" in line
    else:
        assert d["ci95"] is None and "one pair, no interval" in line


def test_non_finite_scores_are_left_out_of_the_difference() -> None:
    d = paired_difference([31.0, float("nan"), 31.2], [30.0, 30.0, 30.1], practical=0.1)
    assert d["n_pairs"] == 2 and d["mean"] == pytest.approx(1.05)
    assert paired_difference([], [], practical=0.1)["verdict"] == "not measured"


def test_ceiling_and_ideal_are_scored_against_the_same_target(
    fresh_run: Path, report
) -> None:
    rep, _ = report
    run = pairscope.open_run(fresh_run)
    cal = calibration_for_run(run)
    restorer = StreamingRestorer(load_model(bundled_model_path(2)), device="cpu")
    first = run.same_instant_pairs()[0]  # the report's first frame
    restored = restorer.restore_now(run[first].lowdose)
    rows, target = frame_rows(run, first, cal, restored)
    crop = crop_of(cal, target.shape)
    scores = score_rows({k: v[crop] for k, v in rows.items()}, target[crop], 0.1)
    for name in ("model", "bicubic", "ceiling", "ideal"):
        assert rep["per_frame"][name]["psnr"][0] == pytest.approx(scores[name]["psnr"])
    # move the target (the raw, unregistered reference): every row moves with it
    raw = run[first].reference.astype(float)[crop]
    moved = score_rows({k: v[crop] for k, v in rows.items()}, raw, 0.1)
    for name in ("ceiling", "ideal", "model"):
        assert moved[name]["psnr"] < scores[name]["psnr"] - 0.5
        assert moved[name]["psnr"] == pytest.approx(
            M.psnr(rows[name][crop], raw, data_range=1.0, scale_invariant=True)
        )


def test_user_targets_are_mapped_through_the_registration(
    fresh_run: Path, tmp_path: Path
) -> None:
    run = pairscope.open_run(fresh_run)
    first = run.same_instant_pairs()[0]
    rec = run.records[first]
    on_ref = ground_truth.targets_in_pixels(run.info, rec, "ReferenceCam")
    on_low = ground_truth.targets_in_pixels(run.info, rec, "LowDoseCam")
    reg = calibration_for_run(run).registration
    for (a, _, _), (b, _, _) in zip(on_ref, on_low, strict=True):
        mapped = reference_to_lowdose(a, reg, run[first].reference.shape)
        assert np.hypot(mapped[0] - b[0], mapped[1] - b[1]) < 0.3
    wide = [t for t in on_ref if t[2] > 0.5]  # the 2-Rayleigh pairs, for pair 0 only
    rods = ground_truth.targets_in_pixels(run.info, rec, "ReferenceCam", rods=True)
    wide_rods = [t for t in rods if t[2] > 0.5]  # and their controls, for every pair
    spec = {
        "targets": [
            {"pair": rec["pair"], "p1": a, "p2": b, "separation_um": s}
            for a, b, s in wide
        ]
        + [
            {"kind": "rod", "p1": a, "p2": b, "separation_um": s}
            for a, b, s in wide_rods
        ]
    }
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(bundled_model_path(2)),
            str(fresh_run),
            "--out",
            str(out),
            "--targets",
            str(path),
            "--rayleigh-um",
            "0.2643",
            "--no-progress",
        ]
    )
    assert code == 0
    rep = json.loads((out / "evaluation.json").read_text())
    (row,) = rep["two_point_table"]["per_separation"]
    assert rep["two_point_table"]["targets"] == "user file"
    assert row["n_pairs"] == len(wide) == 4 and row["separation_rayleigh"] == 2.0
    assert row["resolved_fraction"]["reference"] == 1.0
    assert row["n_rods"] == len(wide_rods) * rep["pairs"] == 4 * rep["pairs"]
    assert row["rods_split_fraction"]["reference"] == 0.0
    assert row["ideal_resolvable"] > 0.95  # the demo's declared photometry and PSF


def test_a_run_the_model_was_trained_on_is_named(
    fresh_run: Path, tmp_path: Path
) -> None:
    run = pairscope.open_run(fresh_run)
    net = default_preview_network(2)
    info = ModelInfo.for_network(
        net,
        name="trained-here",
        lowdose_pixel_size_um=0.2,
        reference_pixel_size_um=0.1,
        trained_on=(TrainedRun(path=str(fresh_run), sha256=manifest_sha256(run)),),
    )
    rep = evaluate(
        loaded_from_network(net, info),
        [fresh_run],
        tmp_path,
        max_pairs=1,
        progress=False,
    )
    assert rep["trained_on_these_runs"] == [str(fresh_run)]
    assert "TRAINING DATA" in (tmp_path / "summary.md").read_text()


def test_models_for_another_binning_pixel_size_or_camera_are_refused(
    fresh_run: Path, tmp_path: Path, capsys
) -> None:
    x4 = load_model(bundled_model_path(4))
    with pytest.raises(ModelMismatchError, match="restores ×4"):
        evaluate(x4, [fresh_run], tmp_path / "a", progress=False)
    net = default_preview_network(2)
    other_px = ModelInfo.for_network(
        net, name="px", lowdose_pixel_size_um=0.26, reference_pixel_size_um=0.13
    )
    with pytest.raises(ModelMismatchError, match=r"0\.26 µm"):
        evaluate(loaded_from_network(net, other_px), [fresh_run], tmp_path / "b")
    other_cam = acquire_rig_run(
        tmp_path / "cam",
        frames=2,
        seed=3,
        sensor=128,
        props=[("LowDoseCam", "Offset", 300)],
    )
    # the rig model is the only source of the camera's offset (never its device
    # properties): this camera, at 300 ADU, declared as such in its rig file
    _declare_lowdose_offset(other_cam, 300.0)
    format1 = Path(__file__).parent / "data" / "format1_demo_x2.safetensors"
    with pytest.raises(ModelMismatchError, match="dark floor"):  # no camera recorded
        evaluate(load_model(format1), [other_cam], tmp_path / "c")
    with pytest.raises(ModelMismatchError, match="offset 100 but"):  # the demo camera's
        evaluate(load_model(bundled_model_path(2)), [other_cam], tmp_path / "f")
    recorded = ModelInfo.for_network(  # a model file that records its camera
        net,
        name="cam",
        lowdose_camera=CameraModel(
            camera="LowDoseCam", offset_adu=100.0, gain_e_per_adu=0.5
        ),
    )
    with pytest.raises(ModelMismatchError, match="offset 100 but"):
        evaluate(loaded_from_network(net, recorded), [other_cam], tmp_path / "e")
    code = main(
        [
            "evaluate",
            str(bundled_model_path(4)),
            str(fresh_run),
            "--out",
            str(tmp_path / "d"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "pairscope: error:" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _declare_lowdose_offset(run_dir: Path, offset: float) -> None:
    """``run_dir``'s rig model as a rig file declaring the low-dose camera's offset
    ``offset`` would have made it."""
    path = run_dir / "run.json"
    info = json.loads(path.read_text())
    photometry = info["rig_model"]["lowdose"]["photometry"]
    photometry.update(offset_adu=offset, source="declared", method="a test rig file")
    path.write_text(json.dumps(info))


@pytest.mark.slow  # eight restorations of every pair
def test_self_ensemble_is_scored_and_said(
    report, fresh_run: Path, tmp_path: Path
) -> None:
    """``--self-ensemble`` scores what ``restore --self-ensemble`` writes, and says so."""
    model = load_model(bundled_model_path(2))
    rep = evaluate(model, [fresh_run], tmp_path, self_ensemble=True, progress=False)
    assert (
        rep["model"]["self_ensemble"] is True
        and not report[0]["model"]["self_ensemble"]
    )
    assert "self-ensemble of 8" in (tmp_path / "summary.md").read_text().splitlines()[0]
    single, ensemble = report[0]["overall"]["model"], rep["overall"]["model"]
    assert ensemble["psnr"] != single["psnr"]  # another restoration was scored
    assert rep["overall"]["bicubic"] == report[0]["overall"]["bicubic"]  # same target


def _without_calibration(run: Path, where: Path) -> Path:
    copy = where / run.name
    shutil.copytree(run, copy)
    (copy / "calibration.json").unlink()
    return copy


def test_the_registration_evaluate_used_is_stored_with_the_run(
    fresh_run: Path, tmp_path: Path
) -> None:
    """As ``pairscope calibrate`` does; an existing calibration is never replaced."""
    bare = _without_calibration(fresh_run, tmp_path)
    model = load_model(bundled_model_path(2))
    rep = evaluate(model, [bare], tmp_path / "a", max_pairs=1, progress=False)
    stored = load_registration(bare)
    assert stored is not None and stored.n_pairs >= 1
    used = rep["calibration"][str(bare)]["registration"]
    assert used == pytest.approx(dataclasses.asdict(stored))
    saved = json.loads((bare / "calibration.json").read_text())
    assert saved["source"].startswith("pairscope evaluate")
    # a calibration already there stays as it is, and is the one used
    mine = Registration(1.5, -2.0, 1.0, 0.05, 20)
    save_calibration(bare, mine)
    before = (bare / "calibration.json").read_bytes()
    rep = evaluate(model, [bare], tmp_path / "b", max_pairs=1, progress=False)
    assert (bare / "calibration.json").read_bytes() == before
    assert rep["calibration"][str(bare)]["registration"] == dataclasses.asdict(mine)


def test_a_run_that_cannot_be_written_is_still_evaluated(
    fresh_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import pairscope.evaluate as ev

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ev, "save_calibration", read_only)
    bare = _without_calibration(fresh_run, tmp_path)
    model = load_model(bundled_model_path(2))
    rep = evaluate(model, [bare], tmp_path / "out", max_pairs=1, progress=False)
    assert rep["pairs"] == 1 and not (bare / "calibration.json").exists()
    assert "registration was not stored (Permission denied)" in caplog.text
