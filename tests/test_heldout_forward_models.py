"""The held-out forward models behind bench_generalisation.py: their physics is the
ground truth of the generalisation figures, so it is checked here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy.ndimage import fourier_shift

from pairscope._binning import bin_sum
from pairscope.metrics import rod_split, two_point_resolved

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str) -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(
    scope="module", params=["heldout_forward_model", "heldout_forward_model_b"]
)
def model(request: pytest.FixtureRequest) -> ModuleType:
    return _script(request.param)


def test_lowdose_converts_to_the_reference_scale(model: ModuleType) -> None:
    """The dose-matched baseline's conversion (datasheet gains and offsets, the
    split) puts the low-dose frame on the truth's scale: means agree within 3 %."""
    fm = model.ForwardModel()
    family, photons = model.HELD_OUT[0]
    frame = fm.render(family, seed=3, peak_photons=photons)
    bench = _script("bench_generalisation")
    low = bench.lowdose_in_reference_units(model, frame.lowdose, fm.binning)
    assert low.mean() == pytest.approx(frame.truth.mean(), rel=0.03)


def test_vectorial_psf_width_and_depth_aberration() -> None:
    b = _script("heldout_forward_model_b")
    fm = b.ForwardModel()
    n, px = 256, fm.fine_px
    ideal = b.VectorialOptics(depth_um=0.0)
    psf = np.fft.fftshift(ideal.psf(n, px, 0.0))
    assert psf.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(psf[n // 2], psf[:, n // 2], rtol=1e-3)  # isotropic
    above = np.flatnonzero(psf[n // 2] > psf.max() / 2)
    fwhm_um = (above[-1] - above[0] + 1) * px
    scalar_fwhm_um = 0.51 * ideal.wavelength_um / ideal.effective_na
    # a high-NA vectorial focus is wider than the scalar one, by at most ~15 %
    assert scalar_fwhm_um < fwhm_um < 1.15 * scalar_fwhm_um
    deep = fm.optics.psf(n, px, 0.05)  # 1.5 um into water: spherical aberration
    assert 0.65 < deep.max() / psf.max() < 0.9


def test_scmos_maps_are_fixed_and_average_to_the_datasheet() -> None:
    b = _script("heldout_forward_model_b")
    cam = b.REF_CAMERA
    offset, gain, read = cam.maps((256, 256))
    again = cam.maps((256, 256))
    assert all(
        np.array_equal(x, y) for x, y in zip((offset, gain, read), again, strict=True)
    )
    assert offset.mean() == pytest.approx(cam.offset_adu, abs=0.1)
    assert gain.mean() == pytest.approx(cam.gain_e_per_adu, rel=0.002)
    assert gain.std() / gain.mean() == pytest.approx(cam.gain_spread, rel=0.05)
    assert read.max() > 3 * np.median(read)  # a tail of noisy pixels
    rng = np.random.default_rng(0)
    flat = cam.read(np.full((256, 256), 500.0), rng)
    electrons = (flat - offset) * gain
    assert electrons.mean() == pytest.approx(500 * cam.quantum_efficiency, rel=0.01)


def test_bead_truth_resolves_wide_pairs_and_splits_no_rod() -> None:
    b = _script("heldout_forward_model_b")
    fm = b.ForwardModel()
    frame = fm.render("beads", seed=1, peak_photons=200)
    px_per_r = fm.optics.rayleigh_um / fm.ref_pixel_um
    assert len(frame.pairs) >= 20 and len(frame.rods) >= 20
    wide = [p for p in frame.pairs if p[2] >= 2.0]
    assert wide and all(
        two_point_resolved(frame.truth, p1, p2).resolved for p1, p2, _ in wide
    )
    assert not any(
        rod_split(frame.truth, e1, e2, sep * px_per_r).resolved
        for e1, e2, sep in frame.rods
    )
    # rods are as bright as pairs: over three frames, the mean summed truth
    # around them agrees within 10 % (each draws its brightness from one law)
    r = round(2.5 * px_per_r)

    def total(
        truth: np.ndarray, a: tuple[float, float], b: tuple[float, float]
    ) -> float:
        x, y = round((a[0] + b[0]) / 2), round((a[1] + b[1]) / 2)
        return float(truth[y - r : y + r + 1, x - r : x + r + 1].sum())

    sums: dict[str, list[float]] = {"pairs": [], "rods": []}
    for seed in (1, 2, 3):
        fr = frame if seed == 1 else fm.render("beads", seed=seed, peak_photons=200)
        for kind in sums:
            sums[kind] += [total(fr.truth, a, b) for a, b, _ in getattr(fr, kind)]
    assert np.mean(sums["rods"]) == pytest.approx(np.mean(sums["pairs"]), rel=0.1)


def test_truth_in_the_lowdose_frame_sits_where_the_camera_says(
    model: ModuleType,
) -> None:
    """Registered pairs restore into the low-dose camera's frame; the bench scores
    there, so that truth must be the reference truth moved by the cameras' offset
    (model B: a quarter pixel; model A: none)."""
    fm = model.ForwardModel()
    frame = fm.render("beads", seed=5, peak_photons=200)
    t = frame.truth.astype(np.float64)
    low_frame = frame.truth_lowdose_frame.astype(np.float64)
    dx, dy = fm.camera_shift_ref_px
    moved = np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(t), (dy, dx))))
    err_moved = np.abs(moved - low_frame).mean()
    if (dx, dy) == (0.0, 0.0):
        assert err_moved < 1e-9
        return
    assert err_moved < 0.2 * np.abs(t - low_frame).mean()
    # and the camera's frame is the low-dose one: binned, it matches the low-dose
    # frame better than the reference camera's truth does
    bench = _script("bench_generalisation")
    low = bench.lowdose_in_reference_units(model, frame.lowdose, fm.binning)
    b = fm.binning

    def err(truth: np.ndarray) -> float:
        return float(np.abs(bin_sum(truth, b) / b**2 - low).mean())

    assert err(low_frame) < err(t)
