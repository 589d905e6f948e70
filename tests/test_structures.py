"""Invented and lost structure (issue 22, item 3): the live check's figures on
synthetic frames with known structure and real Poisson-Gaussian noise, its
nulls, its risk bound, and the monitor that carries it on a real demo run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from pairscope.io.calibration import Registration, apply_registration
from pairscope.live import bundled_model_path
from pairscope.restore import StreamingRestorer, load_model
from pairscope.trust import CameraNoise, TrustMonitor, calibration_for_run
from pairscope.trust._structures import (
    RISK_TOLERANCE,
    NoiseWarp,
    StructureTally,
    structure_risks,
)

from ._demo_rig import acquire_rig_run

RAYLEIGH_PX = 2.6  # the demo's: 0.264 um at 0.1 um per pixel
NOISE = CameraNoise(gain_e_per_adu=0.5, offset_adu=100.0, read_noise_e=1.6)
SIZE = 192


def _scene(rng: np.random.Generator) -> np.ndarray:
    """Expected reference ADU of 60 isolated beads and 20 bead pairs 1.6 Rayleigh
    apart."""
    points: list[np.ndarray] = []
    grid = [(y, x) for y in range(12, SIZE - 12, 18) for x in range(12, SIZE - 12, 18)]
    order = rng.permutation(len(grid))
    for k, i in enumerate(order[:80]):
        centre = np.array(grid[i], float) + rng.uniform(-2, 2, 2)
        if k < 20:
            a = rng.uniform(0, np.pi)
            d = 0.8 * RAYLEIGH_PX * np.array([np.sin(a), np.cos(a)])
            points += [centre + d, centre - d]
        else:
            points.append(centre)
    img = np.zeros((SIZE, SIZE))
    for y, x in np.round(points).astype(int):
        img[y, x] += 4000.0  # electrons of one bead, spread by the PSF below
    sigma = 0.21 / 0.61 * RAYLEIGH_PX  # the Gaussian approximation of the PSF
    photons = ndi.gaussian_filter(img, sigma) + 20.0
    return photons / NOISE.gain_e_per_adu + NOISE.offset_adu


def _noisy(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    electrons = (expected - NOISE.offset_adu) * NOISE.gain_e_per_adu
    e = rng.poisson(electrons) + rng.normal(0, NOISE.read_noise_e, electrons.shape)
    return e / NOISE.gain_e_per_adu + NOISE.offset_adu


def _risks(restored: np.ndarray, reference: np.ndarray):
    return structure_risks(restored, reference, NOISE.variance, RAYLEIGH_PX)


def test_an_exact_restoration_invents_and_loses_nothing() -> None:
    rng = np.random.default_rng(1)
    truth = _scene(rng)
    risks = _risks(truth, _noisy(truth, rng))
    assert risks.reference_structures >= 90  # 60 beads and 40 beads of pairs
    assert risks.invented is not None and risks.invented < 0.05
    assert risks.lost is not None and risks.lost < 0.05
    assert risks.flag() == ""


def test_drawn_beads_are_invented_and_merged_pairs_are_lost() -> None:
    rng = np.random.default_rng(2)
    truth = _scene(rng)
    reference = _noisy(truth, rng)
    # a restoration that draws 45 beads the specimen does not have, in the gaps
    drawn = np.zeros_like(truth)
    for y, x in rng.uniform(20, SIZE - 20, (45, 2)):
        drawn[int(y), int(x) + 9] += 4000.0 / NOISE.gain_e_per_adu
    inventing = truth + ndi.gaussian_filter(drawn, 0.21 / 0.61 * RAYLEIGH_PX)
    risks = _risks(inventing, reference)
    assert risks.invented is not None and risks.invented >= RISK_TOLERANCE
    assert "invented" in risks.flag()
    # a restoration that blurs: every pair merges into one blob, isolated beads stay
    blurry = ndi.gaussian_filter(truth - NOISE.offset_adu, 2.2) + NOISE.offset_adu
    risks = _risks(blurry, reference)
    assert risks.lost is not None and risks.lost >= RISK_TOLERANCE  # 20 of ~100
    assert risks.flag() == ""  # lost is measured, not flagged (the module says why)
    # the null comes from the reference, so the blur cannot hide in it
    assert risks.lost_null < 0.05


def test_too_few_structures_make_no_fraction() -> None:
    rng = np.random.default_rng(3)
    flat = np.full((64, 64), 120.0)
    risks = _risks(flat, _noisy(flat, rng))
    assert risks.invented is None and risks.lost is None and risks.flag() == ""


def test_the_risk_bound_is_conformal_risk_controls() -> None:
    assert StructureTally.bound([]) is None
    assert StructureTally.bound([0.0] * 9) == pytest.approx(0.1)  # (0 + 1) / 10
    assert StructureTally.bound([0.2, 0.4]) == pytest.approx((0.6 + 1) / 3)


def test_the_monitor_records_structures_per_pair_and_their_bounds(
    tmp_path: Path,
) -> None:
    run_dir = acquire_rig_run(tmp_path, frames=3, seed=919, sensor=256)
    import pairscope

    run = pairscope.open_run(run_dir)
    restorer = StreamingRestorer(load_model(bundled_model_path(2)), device="cpu")
    mon = TrustMonitor(tmp_path / "q", calibration=calibration_for_run(run))
    for i in run.same_instant_pairs():
        pair = run[i]
        mon.check(
            pair.index,
            restorer.restore_now(pair.lowdose),
            pair.lowdose,
            pair.reference,
            metadata=pair.metadata,
        )
    mon.finish()
    lines = [json.loads(x) for x in (tmp_path / "q" / "quality.jsonl").open()]
    assert lines and all("structures_invented" in ln for ln in lines)
    for ln in lines:  # the matched model: restored structures the reference shows
        assert ln["structures_reference"] > 20
        assert ln["structures_invented"] < RISK_TOLERANCE, ln
    summary = json.loads((tmp_path / "q" / "quality_summary.json").read_text())
    structures = summary["structures"]
    assert structures["pairs"] == len(lines)
    assert structures["tolerance"] == RISK_TOLERANCE
    assert structures["invented_bound"] == pytest.approx(
        (sum(ln["structures_invented"] for ln in lines) + 1) / (len(lines) + 1)
    )


def test_the_run_is_flagged_on_its_mean_and_certified_on_its_bound() -> None:
    from pairscope.trust._structures import StructureRisks

    def pair(invented: float, lost: float) -> StructureRisks:
        return StructureRisks(invented, lost, invented, lost, 0.0, 0.0, 50, 50)

    few = StructureTally()
    for _ in range(3):
        few.add(pair(0.1, 0.1))
    s = few.summary()  # a good mean, but 3 pairs bound it at (0.3 + 1) / 4
    assert s["flagged"] == [] and not s["certified"] and s["flagged_pairs"] == 0
    many = StructureTally()
    for _ in range(30):
        many.add(pair(0.1, 0.4))
    s = many.summary()  # lost is reported, not flagged
    assert s["flagged"] == [] and s["certified"]
    assert s["lost_mean"] == pytest.approx(0.4)
    assert s["flagged_pairs"] == 0
    inventing = StructureTally()
    for _ in range(30):
        inventing.add(pair(0.4, 0.1))
    s = inventing.summary()
    assert s["flagged"] == ["invented"] and not s["certified"]
    assert s["flagged_pairs"] == 30
    good = StructureTally()
    for _ in range(30):
        good.add(pair(0.1, 0.1))
    assert good.summary()["certified"]


def _lag_correlations(noise: np.ndarray) -> tuple[float, float, float]:
    """Variance and lag-1 correlations along y and x (edges cut)."""
    n = noise[8:-8, 8:-8]
    var = float(n.var())
    cy = float(np.mean(n[1:] * n[:-1]) / var)
    cx = float(np.mean(n[:, 1:] * n[:, :-1]) / var)
    return var, cy, cx


@pytest.mark.parametrize(
    "reg",
    [
        Registration(shift_y_px=0.5, shift_x_px=0.0),
        Registration(shift_y_px=-0.3, shift_x_px=1.45),
        Registration(shift_y_px=0.2, shift_x_px=-0.4, scale=1.0002),
        Registration(shift_y_px=0.2, shift_x_px=-0.4, scale=1.01),
    ],
)
def test_the_noise_filter_does_to_noise_what_the_registration_does(
    reg: Registration,
) -> None:
    """The simulated reference noise goes through the registration with unit
    variance (a shift's gain found once from its response to one pixel) and the
    correlation between neighbours that warping white noise gives (a half-pixel
    shift correlates neighbours strongly; white noise would not be)."""
    rng = np.random.default_rng(7)
    white = rng.standard_normal((256, 256)).astype(np.float32)
    warped = np.asarray(apply_registration(white, reg), np.float64)
    warped /= warped[8:-8, 8:-8].std()
    noise_warp = NoiseWarp.for_registration(reg)
    assert (noise_warp.gain is not None) == (reg.scale == 1)  # found once
    filtered = noise_warp(white)
    var, cy, cx = _lag_correlations(filtered.astype(np.float64))
    _, want_y, want_x = _lag_correlations(warped)
    assert var == pytest.approx(1.0, abs=0.03)
    assert cy == pytest.approx(want_y, abs=0.02)
    assert cx == pytest.approx(want_x, abs=0.02)
    if reg.shift_y_px == 0.5:
        assert want_y > 0.2  # the test can tell a filter from none
    # the bank's draws: the same statistics, and two draws are not one frame
    a, b = (noise_warp.draw(white.shape, rng) for _ in range(2))
    var, cy, cx = _lag_correlations(a.astype(np.float64))
    assert var == pytest.approx(1.0, abs=0.03)
    assert cy == pytest.approx(want_y, abs=0.02)
    assert cx == pytest.approx(want_x, abs=0.02)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05


def test_the_detections_shortcuts_equal_the_full_frame_filters() -> None:
    """Maxima found around the pixels above the threshold, and the Hessian
    computed at them only, equal scipy's full-frame filters (frame edges
    included)."""
    from pairscope._fft_filter import gaussian_plan
    from pairscope.trust._structures import _hessian_at, _local_maxima

    rng = np.random.default_rng(1)
    img = ndi.gaussian_filter(rng.random((128, 128)) * 100, 1).astype(np.float32)
    log = ndi.gaussian_laplace(img, 1.0)
    for q, size in ((90, 3), (50, 5)):
        thr = np.full(log.shape, np.percentile(log, q), np.float32)
        want = np.nonzero((log == ndi.maximum_filter(log, size=size)) & (log > thr))
        got = _local_maxima(log, thr, size)
        assert len(want[0]) > 20
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    ys, xs = np.array([0, 5, 64, 127, 3]), np.array([0, 120, 64, 127, 60])
    got_h = _hessian_at(img, gaussian_plan(img.shape, 0.9), ys, xs)
    for order, got_o in zip(((2, 0), (0, 2), (1, 1)), got_h, strict=True):
        full = ndi.gaussian_filter(img.astype(np.float64), 0.9, order=order)
        np.testing.assert_allclose(got_o, full[ys, xs], atol=1e-9)
