"""Filters by FFT equal scipy's direct filters: Gaussian derivatives (reflect),
cubic-spline shifts (nearest) and the bicubic zoom, frame edges included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pairscope._fft_filter import SeparableFFT, gaussian_plan
from pairscope._spline import shift_frame


@pytest.mark.parametrize(
    ("shape", "sigma"), [((128, 96), 1.6), ((61, 70), 3.2), ((7, 9), 1.5)]
)
def test_gaussian_derivatives_equal_scipys(
    shape: tuple[int, int], sigma: float
) -> None:
    """Every derivative order, on frames larger and smaller than the kernel
    (mirrored more than once), to float32 precision of the frame's range."""
    img = np.random.default_rng(0).random(shape).astype(np.float32) * 1000
    plan = gaussian_plan(shape, sigma)
    spectrum = plan.spectrum(img)
    for order in ((0, 0), (1, 0), (0, 1), (2, 0), (0, 2), (1, 1)):
        want = ndi.gaussian_filter(img.astype(np.float64), sigma, order=order)
        got = plan.apply(spectrum, plan.of_order(order))
        assert got.shape == shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())
    log = plan.apply(spectrum, plan.laplacian())
    want = ndi.gaussian_laplace(img.astype(np.float64), sigma)
    np.testing.assert_allclose(log, want, atol=2e-6 * np.abs(want).max())


def test_a_plan_refuses_a_frame_or_kernel_it_was_not_made_for() -> None:
    plan = SeparableFFT((32, 32), radius=3)
    with pytest.raises(ValueError, match="plan for"):
        plan.spectrum(np.zeros((32, 31), np.float32))
    with pytest.raises(ValueError, match="taps for radius 3"):
        plan.transfer(np.ones(9), np.ones(3))
    with pytest.raises(ValueError, match="mode"):
        SeparableFFT((32, 32), 3, "wrap")


@pytest.mark.parametrize("shift", [(0.3, -1.7), (-2.5, 0.0), (0.0, 0.45), (4.2, 3.9)])
def test_a_shift_by_fft_equals_scipys_inside_the_frame(
    shift: tuple[float, float],
) -> None:
    """Away from the 6-pixel edge where the two splines' boundaries differ."""
    img = ndi.gaussian_filter(np.random.default_rng(1).random((90, 100)), 1.5) * 1e3
    got = shift_frame(img.astype(np.float32), shift)
    want = ndi.shift(img, shift, order=3, mode="nearest")
    m = 6 + int(np.ceil(np.max(np.abs(shift))))
    np.testing.assert_allclose(got[m:-m, m:-m], want[m:-m, m:-m], atol=2e-3)
    assert got.shape == img.shape and got.dtype == np.float32
