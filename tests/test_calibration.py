"""Camera-to-camera registration on the demo microscope."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pairscope._spline import shift_frame
from pairscope.io import open_run
from pairscope.io.calibration import (
    Registration,
    apply_registration,
    bin_sum,
    estimate_registration,
    load_registration,
    save_calibration,
)

# demo cfg: LowDoseCam OffsetX_um=0.13, OffsetY_um=-0.07, 0.1 µm reference pixels
DEMO_SHIFT_YX = (-0.7, 1.3)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_recovers_demo_misregistration(demo_run: Path, tmp_path: Path) -> None:
    reg = estimate_registration(demo_run, max_pairs=8)
    assert reg.shift_y_px == pytest.approx(DEMO_SHIFT_YX[0], abs=0.15)
    assert reg.shift_x_px == pytest.approx(DEMO_SHIFT_YX[1], abs=0.15)
    assert reg.scale == pytest.approx(1.0, abs=0.005)
    assert reg.n_pairs == 8
    assert reg.residual_px < 0.3

    run_dir = shutil.copytree(demo_run, tmp_path / "run")  # fixture is read-only
    save_calibration(run_dir, reg)
    assert load_registration(run_dir) == reg
    assert not list(Path(run_dir).glob("*.tmp"))


def test_apply_registration_aligns_reference(demo_run: Path) -> None:
    run = open_run(demo_run)
    reg = Registration(*DEMO_SHIFT_YX)
    gain_raw, gain_reg = [], []
    for i in run.with_reference()[:4]:
        p = run[i]
        assert p.reference is not None
        low = p.lowdose.astype(float)[4:-4, 4:-4]
        raw = bin_sum(p.reference.astype(float), 2)[4:-4, 4:-4]
        fixed = bin_sum(apply_registration(p.reference, reg, 2), 2)[4:-4, 4:-4]
        gain_raw.append(_corr(low, raw))
        gain_reg.append(_corr(low, fixed))
    assert np.mean(gain_reg) > np.mean(gain_raw) + 0.02
    assert apply_registration(p.reference, Registration(), 2).shape == (256, 256)


def test_pairs_of_two_instants_warn_that_motion_enters_the_shift(
    demo_core, demo_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import useq

    from pairscope.acquire import PairedAcquisition
    from pairscope.config import AcquisitionSettings
    from pairscope.io import RunWriter

    for cam in ("LowDoseCam", "ReferenceCam"):
        demo_core.setProperty(cam, "SensorSize", 128)
    summary = PairedAcquisition(demo_core, AcquisitionSettings(mode="sequential")).run(
        useq.MDASequence(time_plan={"interval": 0, "loops": 4}),
        writer=RunWriter(tmp_path),
    )
    assert not open_run(summary.run_dir).same_instant_pairs()
    with caplog.at_level(logging.WARNING):
        estimate_registration(summary.run_dir, max_pairs=4, fit_scale=False)
    assert "no pair's frames are of one instant" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # same-instant pairs: nothing to warn of
        estimate_registration(demo_run, max_pairs=4, fit_scale=False)
    assert "one instant" not in caplog.text


def test_blank_frames_are_never_registered() -> None:
    """All-zero frames (DemoCamera FastImage 1) fit any shift with residual 0: a
    registration from them would be a lie, so none is made."""
    from pairscope.io.calibration import registration_from_pairs

    blank = (np.zeros((64, 64), np.float32), np.zeros((128, 128), np.float32))
    with pytest.raises(ValueError, match="no structure"):
        registration_from_pairs([blank] * 4, 2, fit_scale=False)


def _magnified_pairs(
    reg: Registration, n: int = 4, size: int = 192
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs whose low-dose frame is ``bin(apply_registration(ref, reg))`` + noise."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        ref = ndi.gaussian_filter(rng.random((size, size)), 2.0) * 4000 + 100
        low = bin_sum(apply_registration(ref, reg, 2), 2)
        low = low + rng.normal(0, 2.0, low.shape)
        out.append((low.astype(np.float32), ref.astype(np.float32)))
    return out


def test_the_scale_and_shift_fit_recovers_a_known_magnification() -> None:
    """A low-dose camera at 1 % more magnification, displaced by a fraction of a
    pixel: the joint fit finds both (the demo's cameras differ in shift only)."""
    from pairscope.io.calibration import registration_from_pairs

    truth = Registration(0.6, -1.4, 1.01)
    reg = registration_from_pairs(_magnified_pairs(truth), 2)
    assert reg.scale == pytest.approx(1.01, abs=5e-4)
    assert reg.shift_y_px == pytest.approx(0.6, abs=0.03)
    assert reg.shift_x_px == pytest.approx(-1.4, abs=0.03)


def test_a_magnification_outside_the_fit_range_is_refused() -> None:
    """Cameras 10 % apart in magnification are not one field: said, not clamped."""
    from pairscope.io.calibration import registration_from_pairs

    with pytest.raises(ValueError, match="magnification ratio"):
        registration_from_pairs(_magnified_pairs(Registration(0.0, 0.0, 1.10)), 2)


@pytest.mark.parametrize(
    "shift",
    [(0.3, -0.45), (1.5, -2.5), (-0.5, 0.5), (12.3, -0.7), (-40.2, 33.6), (3, 0)],
)
def test_a_shift_is_scipys_cubic_spline_shift(shift: tuple[float, float]) -> None:
    """``shift_frame`` (two 1-D filters and a copy) equals scipy's cubic-spline
    shift to float32 precision away from the edge, and stays within the frame's
    range at it (the spline's own boundary handling: at most 6 pixels deep)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    frame = ndi.gaussian_filter(rng.random((256, 256)) * 1000, 1).astype(np.float32)
    want = ndi.shift(frame, shift, order=3, mode="nearest")
    got = shift_frame(frame, shift)
    assert got.dtype == np.float32 and got.shape == frame.shape
    inner = (slice(7, -7), slice(7, -7))
    np.testing.assert_allclose(got[inner], want[inner], atol=1e-3 * np.ptp(frame))
    span = np.ptp(frame)
    assert (
        got.min() >= frame.min() - 0.1 * span and got.max() <= frame.max() + 0.1 * span
    )
    reg = Registration(shift_y_px=-shift[0], shift_x_px=-shift[1])
    np.testing.assert_array_equal(apply_registration(frame, reg), got)
