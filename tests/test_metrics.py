"""Tests for pairscope.metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.special import j1

from pairscope import metrics as m

RNG_SEED = 1234


def _smooth_image(shape: tuple[int, int] = (128, 128), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 + 50 * gaussian_filter(rng.standard_normal(shape), 3) * 10


# --- PSNR / SSIM --------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 2.0, 10.0])
def test_psnr_matches_gaussian_noise_level(sigma: float) -> None:
    rng = np.random.default_rng(RNG_SEED)
    target = rng.uniform(0, 100, (256, 256))
    pred = target + rng.normal(0, sigma, target.shape)
    expected = 10 * np.log10(np.ptp(target) ** 2 / sigma**2)
    assert m.psnr(pred, target) == pytest.approx(expected, abs=0.1)


def test_psnr_identical_is_inf() -> None:
    img = _smooth_image()
    assert m.psnr(img, img) == np.inf


@pytest.mark.parametrize("scale_invariant", [False, True])
def test_ssim_identical_is_one(scale_invariant: bool) -> None:
    img = _smooth_image()
    assert abs(m.ssim(img, img, scale_invariant=scale_invariant) - 1.0) < 1e-9


def test_ssim_decreases_with_noise() -> None:
    rng = np.random.default_rng(RNG_SEED)
    img = _smooth_image()
    values = [m.ssim(img + rng.normal(0, s, img.shape), img) for s in (1.0, 5.0, 20.0)]
    assert values[0] < 1.0
    assert values[0] > values[1] > values[2]


@pytest.mark.parametrize(("a", "b"), [(3.0, 7.0), (0.01, -5.0), (-2.0, 100.0)])
def test_scale_invariant_metrics_ignore_affine_change(a: float, b: float) -> None:
    rng = np.random.default_rng(RNG_SEED)
    target = _smooth_image()
    pred = target + rng.normal(0, 5, target.shape)
    for metric in (m.psnr, m.ssim):
        base = metric(pred, target, scale_invariant=True)
        assert metric(a * pred + b, target, scale_invariant=True) == pytest.approx(
            base, abs=1e-9
        )


def test_affine_fit_and_percentile_normalize() -> None:
    x = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(m.affine_fit(5 * x - 2, x), x, atol=1e-12)
    n = m.percentile_normalize(3 * x + 1, 0, 100)
    assert n.min() == pytest.approx(0) and n.max() == pytest.approx(1)


# --- FRC ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "f_c_per_px", "pixel_um"),
    [(256, 0.15, 0.1), (256, 0.3, 0.065), (512, 0.1, 0.1)],
)
@pytest.mark.parametrize("seed", [0, 3])
def test_frc_finds_band_limit(
    n: int, f_c_per_px: float, pixel_um: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n)
    mask = np.hypot(k[:, None], k[None, :]) <= f_c_per_px
    signal = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * mask))
    noise = 0.05 * signal.std()
    a = signal + rng.normal(0, noise, (n, n))
    b = signal + rng.normal(0, noise, (n, n))
    curve = m.frc_curve(a, b, pixel_size_um=pixel_um)
    assert curve.correlation.shape == curve.frequencies_per_um.shape
    expected_um = pixel_um / f_c_per_px
    assert m.frc_resolution(curve) == pytest.approx(expected_um, rel=0.1)


def test_frc_crops_to_square_and_handles_uncorrelated() -> None:
    rng = np.random.default_rng(RNG_SEED)
    a, b = rng.standard_normal((2, 128, 160))
    curve = m.frc_curve(a, b)
    assert curve.n_pixels_per_ring.size == 64
    assert m.frc_resolution(curve) > 128 / 8  # no correlation beyond the first rings
    assert m.frc_resolution(m.frc_curve(a, a)) == pytest.approx(2.0, rel=0.02)


# --- two-point ----------------------------------------------------------------

PIXEL_UM, WAVELENGTH_UM, NA = 0.02, 0.52, 1.2
RAYLEIGH_UM = 0.61 * WAVELENGTH_UM / NA


def _airy_pairs(
    pairs: list[tuple[tuple[float, float], float, float]], shape: tuple[int, int]
) -> tuple[np.ndarray, list[m.TwoPointTarget]]:
    """Sum of Airy pairs; each pair is (centre_xy_px, separation_um, angle)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.zeros(shape)
    targets: list[m.TwoPointTarget] = []
    for (cx, cy), sep_um, angle in pairs:
        half = 0.5 * sep_um / PIXEL_UM
        dx, dy = half * np.cos(angle), half * np.sin(angle)
        p1, p2 = (cx - dx, cy - dy), (cx + dx, cy + dy)
        for px, py in (p1, p2):
            r_um = np.hypot(xx - px, yy - py) * PIXEL_UM
            v = 2 * np.pi * NA * r_um / WAVELENGTH_UM
            safe = np.where(v == 0, 1.0, v)
            img += np.where(v == 0, 1.0, (2 * j1(safe) / safe) ** 2)
        targets.append((p1, p2, sep_um))
    return img, targets


@pytest.mark.parametrize("angle", [0.0, 0.7])
@pytest.mark.parametrize(
    ("rel_sep", "resolved"), [(0.6, False), (0.9, False), (1.1, True), (1.5, True)]
)
def test_two_point_rayleigh_on_airy_pairs(
    rel_sep: float, resolved: bool, angle: float
) -> None:
    sep = rel_sep * RAYLEIGH_UM
    img, [(p1, p2, _)] = _airy_pairs([((64.3, 63.8), sep, angle)], (128, 128))
    res = m.two_point_resolved(img + 10.0, p1, p2)
    assert res.resolved is resolved
    assert res.peak1 == pytest.approx(res.peak2, rel=0.05)


def test_two_point_dip_at_rayleigh_is_calibrated() -> None:
    img, [(p1, p2, _)] = _airy_pairs([((64.0, 64.0), RAYLEIGH_UM, 0.3)], (128, 128))
    auto = m.two_point_resolved(img, p1, p2)
    given = m.two_point_resolved(img + 5.0, p1, p2, background=5.0)
    for res in (auto, given):
        assert res.dip == pytest.approx(m.RAYLEIGH_DIP_RATIO, abs=0.01)


def test_two_point_report_and_smallest_separation() -> None:
    rels = [0.6, 0.9, 1.1, 1.5, 2.0]
    pairs = [
        ((40.0 + 45 * i, 40.0), rel * RAYLEIGH_UM, 0.0) for i, rel in enumerate(rels)
    ]
    img, targets = _airy_pairs(pairs, (80, 260))
    images = {"sharp": img, "smoothed": gaussian_filter(img, 6.0)}
    report = m.two_point_report(images, targets)
    seps = [t[2] for t in targets]
    assert list(report["sharp"]) == seps
    assert [report["sharp"][s] for s in seps] == [0, 0, 1, 1, 1]
    sharp = m.smallest_resolved_separation(report["sharp"])
    smooth = m.smallest_resolved_separation(report["smoothed"])
    assert sharp == pytest.approx(1.1 * RAYLEIGH_UM)
    assert smooth > sharp
    assert m.smallest_resolved_separation({1.0: 1.0, 2.0: 0.0}) == np.inf


# --- baselines and consistency ------------------------------------------------


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3])
def test_upsample_shape_and_alignment(method: str, factor: int) -> None:
    low = _smooth_image((20, 24))
    up = m.upsample(low, factor, method)  # type: ignore[arg-type]
    assert up.shape == (20 * factor, 24 * factor)
    np.testing.assert_allclose(
        m.upsample(np.full((5, 6), 3.0), factor, method), 3.0, atol=1e-5
    )
    if method != "nearest":  # a linear ramp is reproduced away from the borders
        ramp = np.tile(np.arange(24.0), (4, 1))
        fine = m.upsample(ramp, factor, method)[0]  # type: ignore[arg-type]
        j = np.arange(fine.size)
        expected = (j - (factor - 1) / 2) / factor
        inner = slice(8 * factor, -8 * factor)
        np.testing.assert_allclose(fine[inner], expected[inner], atol=1e-3)


def test_nearest_upsample_rebins_to_same_image() -> None:
    low = _smooth_image((16, 16))
    for factor in (2, 4):
        up = m.upsample(low, factor, "nearest")
        np.testing.assert_array_equal(m.bin_image(up, factor, "mean"), low)


def test_consistency_residual() -> None:
    factor = 2
    fine = _smooth_image((64, 64))
    low = m.reblur_and_bin(fine, factor)
    assert m.consistency_residual(fine, low, factor).rms < 1e-9
    invented = fine.copy()
    invented[30:32, 40:42] += 5 * np.ptp(fine)
    res = m.consistency_residual(invented, low, factor)
    peak = np.unravel_index(np.argmax(np.abs(res.residual)), res.residual.shape)
    assert peak == (15, 20)
    assert np.abs(res.residual[15, 20]) > 20 * np.median(np.abs(res.residual))
    assert res.rms > 1e-3


# --- plots --------------------------------------------------------------------


def test_plots_write_pngs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(RNG_SEED)
    a, b = rng.standard_normal((2, 64, 64))
    crop = _smooth_image((32, 32))
    paths = [
        m.plot_metrics_over_time(
            {
                "model": {"psnr": [30, 31], "ssim": [0.8, 0.9]},
                "bicubic": {"psnr": [28, 28]},
            },
            tmp_path / "time.png",
        ),
        m.plot_frc_curves({"ab": m.frc_curve(a, b)}, tmp_path / "frc.png"),
        m.plot_side_by_side(
            {"reference": crop, "model": crop + 1}, tmp_path / "crops.png"
        ),
        m.plot_two_point(
            {"model": {0.2: 0.0, 0.3: 1.0}}, tmp_path / "sub" / "tp.png", RAYLEIGH_UM
        ),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wilson_interval_covers_and_narrows() -> None:
    assert m.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = m.wilson_interval(6, 12)
    assert lo < 0.5 < hi and hi - lo < 0.6
    lo2, hi2 = m.wilson_interval(60, 120)  # ten times the pairs: a narrower interval
    assert lo < lo2 < 0.5 < hi2 < hi
    assert m.wilson_interval(12, 12)[1] == 1.0 and m.wilson_interval(12, 12)[0] > 0.7


def test_two_point_tally_flags_regressions_and_invented_dips() -> None:
    tally = m.TwoPointTally()
    base = {"nearest": False, "bilinear": False, "bicubic": False}
    for i in range(4):  # 0.2 µm: bicubic resolves 3/4, the model 1/4 -> regression
        tally.add(0.2, base | {"model": i == 0, "bicubic": i > 0, "reference": True})
    for i in range(4):  # 0.1 µm: the model shows dips the reference does not
        tally.add(0.1, base | {"model": i < 2, "reference": False})
    for _ in range(4):  # 0.4 µm: everyone resolves
        tally.add(0.4, dict.fromkeys(m.TABLE_METHODS, True))
    rows, regressions = tally.table(rayleigh_um=0.2)
    assert [r["separation_um"] for r in rows] == [0.1, 0.2, 0.4]
    assert [r["separation_rayleigh"] for r in rows] == [0.5, 1.0, 2.0]
    assert [r["regression"] for r in rows] == [True, True, False]
    assert rows[0]["unsupported_dips"] == 2 and "reference" in regressions[0]["reason"]
    assert "bicubic 75%" in regressions[1]["reason"]
    assert rows[2]["resolved_fraction"] == dict.fromkeys(m.TABLE_METHODS, 1.0)
    assert all(r["n_pairs"] == 4 for r in rows)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_is_scipys_cubic_spline_zoom(factor: int) -> None:
    """The bicubic baseline (phase filters) equals scipy's order-3 zoom with
    half-sample reflection, edges included, frame by frame in a stack (scipy's
    zoom of the stack itself prefilters across its frames too, mixing them)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(factor)
    stack = ndi.gaussian_filter(rng.random((2, 40, 56)) * 1000, (0, 1, 1))
    want = np.stack(
        [ndi.zoom(f, factor, order=3, mode="reflect", grid_mode=True) for f in stack]
    )
    got = m.upsample(stack, factor, "bicubic")
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=1e-6 * np.ptp(stack))
    np.testing.assert_allclose(
        m.upsample(stack[0], factor, "bicubic"), want[0], atol=1e-6 * np.ptp(stack)
    )
