"""Two-point honesty: matched single rods as the control of every pair, the ideal
observer's bound from the camera model and PSF, the table's invention flag, and the
targets file's rods (issue 23, item 1).  Real numpy images, the real specimen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from pairscope import metrics as M
from pairscope._targets import (
    ROD_LENGTH_OVER_SEPARATION,
    check_target_lengths,
    load_targets,
)
from pairscope.rig import Optics, Photometry
from pairscope.sim import Specimen

NA, WAVELENGTH_NM = 1.2, 520.0
OPTICS = Optics(numerical_aperture=NA, wavelength_nm=WAVELENGTH_NM)
RAYLEIGH_UM = 0.61 * WAVELENGTH_NM / 1000 / NA
FINE = 8  # fine samples per pixel of the test images


def _blurred(
    points_xy: np.ndarray, weights: np.ndarray, shape: tuple[int, int], pixel_um: float
) -> np.ndarray:
    """Points (pixel coordinates) through the Airy PSF, integrated over pixels."""
    h, w = shape
    fine = np.zeros((h * FINE, w * FINE))
    for (x, y), wt in zip(points_xy, weights, strict=True):
        fine[round((y + 0.5) * FINE - 0.5), round((x + 0.5) * FINE - 0.5)] += wt
    otf = OPTICS.otf(fine.shape, pixel_um / FINE)
    img = np.fft.irfft2(np.fft.rfft2(fine) * otf, s=fine.shape)
    return np.maximum(img, 0).reshape(h, FINE, w, FINE).sum((1, 3))


def _rod_points(centre: np.ndarray, direction: np.ndarray, length: float) -> np.ndarray:
    t = (np.arange(64) + 0.5) / 64 - 0.5
    return centre + np.outer(t * length, direction)


# -- the control object: a pair splits, its matched rod does not --------------------


@pytest.mark.parametrize("rayleighs", [1.5, 2.0])
@pytest.mark.parametrize("angle", [0.0, 1.1])
def test_a_resolved_pair_shows_a_dip_its_matched_rod_does_not(
    rayleighs: float, angle: float
) -> None:
    pixel_um = 0.025  # fine sampling: the images are the optics, not the camera
    sep_px = rayleighs * RAYLEIGH_UM / pixel_um
    u = np.array([np.cos(angle), np.sin(angle)])
    centre = np.array([48.3, 47.6])
    a, b = centre - 0.5 * sep_px * u, centre + 0.5 * sep_px * u
    pair = _blurred(np.stack([a, b]), np.ones(2), (96, 96), pixel_um)
    length = ROD_LENGTH_OVER_SEPARATION * sep_px
    rod = _blurred(
        _rod_points(centre, u, length), np.full(64, 2 / 64), (96, 96), pixel_um
    )
    end1, end2 = centre - 0.5 * length * u, centre + 0.5 * length * u
    assert M.two_point_resolved(pair + 3, tuple(a), tuple(b)).resolved
    assert not M.rod_split(rod + 3, tuple(end1), tuple(end2), sep_px).resolved
    # a restorer that draws the pair where the single rod is has split it
    assert M.rod_split(pair + 3, tuple(end1), tuple(end2), sep_px).resolved


# -- the table: invention is flagged, and the flat rows of evaluation.json --------


def test_the_table_flags_a_method_that_splits_rods_and_keeps_its_counts() -> None:
    tally = M.TwoPointTally()
    methods = M.TABLE_METHODS
    for i in range(20):
        tally.add(0.4, dict.fromkeys(methods, True))
        # the model splits 2 of 20 rods (10 %), nearest 1 (5 %: not above the limit)
        tally.add_rod(
            0.4,
            {
                m: (m == "model" and i < 2) or (m == "nearest" and i == 0)
                for m in methods
            },
        )
    tally.set_ideal({0.4: {"resolvable": 0.8}})
    per_sep, regressions = tally.table(0.2)
    (row,) = per_sep
    assert row["rods_split_fraction"]["model"] == pytest.approx(0.1)
    assert row["inventing"] == {m: m == "model" for m in methods}
    assert row["ideal_resolvable"] == 0.8 and row["n_rods"] == 20
    lo, hi = row["rods_ci95"]["model"]
    assert lo < 0.1 < hi
    (reg,) = regressions
    assert "splits 10% of 20 matched single rods" in reg["reason"]
    flat = M.TwoPointTally.rows(per_sep)
    assert [r["method"] for r in flat] == list(methods)
    model = flat[0]
    assert model["pairs_resolved"] == 1.0 and model["rods_split"] == pytest.approx(0.1)
    assert model["separation_rayleigh"] == 2.0 and model["ideal_resolvable"] == 0.8
    # without the invention the separation is no regression
    clean = M.TwoPointTally()
    clean.add(0.4, dict.fromkeys(methods, True))
    clean.add_rod(0.4, dict.fromkeys(methods, False))
    assert clean.table(0.2)[1] == []


# -- the ideal observer: photometry, brightness and the Neyman-Pearson bound --------

PHOTOMETRY = Photometry(
    e_per_adu=0.5, offset_adu=100.0, read_noise_e=1.6, source="declared"
)


def _observer() -> M.IdealObserver:
    return M.IdealObserver(2, 0.1, OPTICS.otf, PHOTOMETRY, RAYLEIGH_UM)


def _frames(
    sep_rayleigh: float, bead_e: float, bg_e: float, n: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], tuple, tuple]:
    """Binned (x2) low-dose frames in ADU of one pair, noise per the photometry."""
    sep_px = sep_rayleigh * RAYLEIGH_UM / 0.1
    centre = np.array([40.2, 39.7])
    u = np.array([np.cos(0.4), np.sin(0.4)])
    a, b = centre - 0.5 * sep_px * u, centre + 0.5 * sep_px * u
    expected = _blurred(np.stack([a, b]), np.full(2, bead_e), (80, 80), 0.1)
    expected = expected.reshape(40, 2, 40, 2).sum((1, 3)) + bg_e
    frames = []
    for _ in range(n):
        e = rng.poisson(expected) + rng.normal(0, 1.6, expected.shape)
        frames.append(e / 0.5 + 100.0)
    return frames, tuple(a), tuple(b)


def test_the_ideal_observer_fits_the_beads_brightness_in_electrons() -> None:
    rng = np.random.default_rng(3)
    frames, a, b = _frames(1.5, 120.0, 6.0, 12, rng)
    obs = _observer()
    for f in frames:
        obs.add(f, a, b, 1.5 * RAYLEIGH_UM)
    (target,) = obs._targets.values()
    bright, bg = np.median(np.array(target.fits), axis=0)
    assert bright == pytest.approx(120.0, rel=0.06)  # electrons, not ADU (x2)
    assert bg == pytest.approx(6.0, abs=0.6)


@pytest.mark.parametrize("sep_rayleigh", [1.0, 1.3])
def test_the_bound_is_what_the_optimal_test_achieves_on_simulated_frames(
    sep_rayleigh: float,
) -> None:
    """d' against the closest rod predicts the best detector's pairs-called-two at
    5 % rods-called-two: simulate both hypotheses with the camera's own noise and
    apply the likelihood-ratio (matched-filter) test."""
    rng = np.random.default_rng(11)
    bead_e, bg_e = 60.0, 4.0
    frames, a, b = _frames(sep_rayleigh, bead_e, bg_e, 6, rng)
    obs = _observer()
    sep_um = sep_rayleigh * RAYLEIGH_UM
    for f in frames:
        obs.add(f, a, b, sep_um)
    ((_sep, d, ratio, bead),) = obs.per_pair()
    assert bead == pytest.approx(bead_e, rel=0.1)
    bound = float(norm.cdf(d - norm.ppf(0.95)))
    assert 0.15 < bound < 0.97  # the separations where the bound decides something
    # the two hypotheses, expected electrons per binned pixel
    sep_px = sep_um / 0.1
    mid = 0.5 * (np.array(a) + np.array(b))
    u = (np.array(b) - np.array(a)) / sep_px
    pair = _blurred(np.stack([a, b]), np.full(2, bead_e), (80, 80), 0.1)
    rod = _blurred(
        _rod_points(mid, u, ratio * sep_px), np.full(64, 2 * bead_e / 64), (80, 80), 0.1
    )
    pair, rod = (x.reshape(40, 2, 40, 2).sum((1, 3)) for x in (pair, rod))
    w = 1.0 / (pair + bg_e + 1.6**2)
    rod *= (w * rod * pair).sum() / (w * rod * rod).sum()  # its brightness fitted

    def statistic(expected: np.ndarray, n: int) -> np.ndarray:
        e = rng.poisson(np.broadcast_to(expected + bg_e, (n, *expected.shape)))
        e = e + rng.normal(0, 1.6, e.shape)
        return ((e - bg_e - rod) * w * (pair - rod)).sum((1, 2))

    on_rods, on_pairs = statistic(rod, 4000), statistic(pair, 4000)
    threshold = np.quantile(on_rods, 0.95)  # 5 % of rods called two
    achieved = float((on_pairs > threshold).mean())
    assert achieved == pytest.approx(bound, abs=0.06)


def test_the_bound_falls_with_the_camera_noise_and_needs_known_photometry() -> None:
    rng = np.random.default_rng(5)
    frames, a, b = _frames(1.25, 40.0, 4.0, 4, rng)
    quiet, noisy = (
        _observer(),
        M.IdealObserver(
            2,
            0.1,
            OPTICS.otf,
            PHOTOMETRY.model_copy(update={"read_noise_e": 6.0}),
            RAYLEIGH_UM,
        ),
    )
    for f in frames:
        quiet.add(f, a, b, 0.33)
        noisy.add(f, a, b, 0.33)
    assert noisy.per_pair()[0][1] < 0.8 * quiet.per_pair()[0][1]
    from pairscope.rig import CameraFacts, RigModel

    def rig(photometry: Photometry, pixel: float | None) -> RigModel:
        cams = {
            role: CameraFacts(
                role=role,
                label=role,
                binning=b,
                pixel_size_um=pixel and pixel * b,
                photometry=photometry,
            )
            for role, b in (("lowdose", 2), ("reference", 1))
        }
        return RigModel(factor=2, optics=OPTICS, **cams)

    assert M.ideal_observer_for_rig(rig(PHOTOMETRY, 0.1), 2)[0] is not None
    observer, why = M.ideal_observer_for_rig(rig(Photometry(), None), 2)
    assert observer is None
    assert why is not None and "photometry" in why and "pixel size" in why


# -- the demo specimen: a matched rod beside every pair ------------------------------


def test_every_pair_has_a_matched_rod_away_from_every_bead() -> None:
    spec = Specimen(41)
    assert len(spec.rods) == len(spec.targets) == 24
    beads = np.array([p for t in spec.targets for p in (t.p1_um, t.p2_um)])
    for rod, pair in zip(spec.rods, spec.targets, strict=True):
        length = np.hypot(*np.subtract(rod.p2_um, rod.p1_um))
        assert length == pytest.approx(1.8 * pair.separation_um)
        assert rod.separation_rayleigh == pair.separation_rayleigh
        ends = np.array([rod.p1_um, rod.p2_um])
        assert np.linalg.norm(beads[:, None] - ends[None], axis=-1).min() > 1.5
    without = Specimen(41, matched_rods=False)
    with_rods, plain = spec.emitters(2.0), without.emitters(2.0)
    n = len(plain.weights)  # everything else is the same specimen
    np.testing.assert_array_equal(with_rods.xy_um[:n], plain.xy_um)
    extra = with_rods.weights[n:]
    assert extra.sum() == pytest.approx(24 * 2 * spec.bead_brightness)  # 2 beads each


def test_a_bead_slide_is_the_band_and_a_static_field_of_beads_pairs_and_rods() -> None:
    """The ``beads`` specimen (issue 23, item 2): no tubules or vesicles; the band's
    pairs and matched rods; elsewhere single beads, bead pairs 0.75-2.5 Rayleigh
    apart and single rods as bright as a pair, in equal numbers, all still."""
    from pairscope.sim._specimen import BEAD_FIELD_OBJECTS, BEAD_SLIDE_BRIGHTNESS

    spec = Specimen(41, kind="beads")
    assert spec.bead_brightness == BEAD_SLIDE_BRIGHTNESS
    assert len(spec.targets) == len(spec.rods) == 24
    now, later = spec.emitters(0.0), spec.emitters(30.0)
    np.testing.assert_array_equal(now.xy_um, later.xy_um)  # a slide: nothing moves
    beads = np.isclose(now.weights, BEAD_SLIDE_BRIGHTNESS)
    field = now.xy_um[:, 1] > -6.0  # above the target band: the field only
    bead_xy = now.xy_um[beads & field]
    nearest = np.sort(np.linalg.norm(bead_xy[:, None] - bead_xy[None], axis=-1), 1)[
        :, 1
    ]
    in_pairs = nearest < 2.6 * spec.rayleigh_um  # a pair's beads, not neighbours
    singles, paired = int((~in_pairs).sum()), int(in_pairs.sum())
    assert paired % 2 == 0
    assert abs(singles - paired // 2) <= 0.05 * BEAD_FIELD_OBJECTS
    assert 0.74 * spec.rayleigh_um < nearest[in_pairs].min()
    rod_light = now.weights[field & ~beads].sum()
    assert rod_light == pytest.approx(
        paired // 2 * 2 * BEAD_SLIDE_BRIGHTNESS, rel=0.1
    )  # as many rods as pairs, each as bright as a pair
    with pytest.raises(ValueError, match="unknown specimen 'cell'"):
        Specimen(41, kind="cell")


def test_a_run_of_the_bead_slide_is_rebuilt_as_one() -> None:
    """The demo hub's ``Specimen`` property is recorded with the run and the
    ground truth (two-point targets, evaluation) is rebuilt from it."""
    from pairscope.hardware import demo_rig_path, open_rig
    from pairscope.sim import configure_demo_rig
    from pairscope.sim.ground_truth import scene_for_run

    with open_rig(demo_rig_path()) as rig:
        configure_demo_rig(rig, seed=41, specimen="beads")
        hub = rig.core_of("LowDoseCam").core
        state = {
            "DemoHub": {
                k: hub.getProperty("DemoHub", k)
                for k in hub.getDevicePropertyNames("DemoHub")
            }
        }
    assert state["DemoHub"]["Specimen"] == "beads"
    scene = scene_for_run({"system_state": state})
    assert scene.specimen.kind == "beads"
    assert scene.specimen.seed == 41
    del state["DemoHub"]["Specimen"]  # a run acquired before bead slides existed
    assert scene_for_run({"system_state": state}).specimen.kind == "cells"


# -- the targets file: rods, and pairs and rods mixed up -----------------------------


def test_a_targets_file_lists_rods_beside_pairs(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            [
                [[10, 10], [12, 10], 0.2],
                [[20, 20], [23.6, 20], 0.2, "rod"],
            ]
        )
    )
    spec = load_targets(path)
    assert spec.for_pair(0) == [((10.0, 10.0), (12.0, 10.0), 0.2)]
    assert spec.rods_for_pair(5) == [((20.0, 20.0), (23.6, 20.0), 0.2)]
    check_target_lengths(spec, 0.1)  # 2 px = 0.2 um; the rod 1.8x
    path.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "pair": 2,
                        "kind": "rod",
                        "p1": [5, 5],
                        "p2": [8.6, 5],
                        "separation_um": 0.2,
                    }
                ]
            }
        )
    )
    spec = load_targets(path)
    assert spec.rods_for_pair(2) and not spec.rods_for_pair(1) and not spec.for_pair(2)


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([[[10, 10], [13.6, 10], 0.2]], 'mark it "kind": "rod"'),  # a rod called a pair
        ([[[10, 10], [12, 10], 0.2, "rod"]], "a rod matched to a pair is about 1.8x"),
        ([[[10, 10], [12, 10], 0.2, "blob"]], '"kind" is "pair" or "rod"'),
    ],
)
def test_pairs_and_rods_mixed_up_get_one_clear_line(
    entries: list, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="rod") as err:
        check_target_lengths(load_targets(path), 0.1)
    assert words in str(err.value) and "\n" not in str(err.value)
