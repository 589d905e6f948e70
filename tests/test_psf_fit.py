"""The PSF measured on reference frames, and point emitters rendered through it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from pairscope.train._psf_fit import (
    PsfModel,
    fit_psf_frames,
    random_points,
    render_points,
)

SIGMA = 1.3  # reference pixels
OFFSET = 100.0


def _frame(rng: np.random.Generator, blur: float = 0.0, n: int = 40) -> np.ndarray:
    """Isolated spots through a Gaussian PSF of SIGMA (each convolved with a
    Gaussian object of ``blur`` px), on a background, Poisson noise, in ADU."""
    xy = rng.uniform(12, 244, (n, 2))
    img = render_points((256, 256), xy, rng.uniform(200, 600, n), SIGMA)
    if blur:
        img = gaussian_filter(img, blur) * (1 + blur**2 / SIGMA**2)
    return OFFSET + rng.poisson(img + 20).astype(np.float64)


def test_the_width_of_point_spots_is_the_psf() -> None:
    rng = np.random.default_rng(0)
    psf = fit_psf_frames([_frame(rng) for _ in range(6)], offset_adu=OFFSET)
    assert psf.n_spots >= 40
    assert psf.sigma_px == pytest.approx(SIGMA, rel=0.08)
    assert 300 < psf.peak_adu < 700


def test_larger_objects_do_not_widen_the_psf() -> None:
    """Puncta of any size are points or larger: the PSF is their low quantile."""
    rng = np.random.default_rng(1)
    frames = [_frame(rng, blur) for blur in (0.0, 1.0, 1.5, 2.0, 0.0, 1.2)]
    psf = fit_psf_frames(frames, offset_adu=OFFSET)
    assert psf.sigma_px == pytest.approx(SIGMA, rel=0.1)


def test_bright_large_objects_do_not_crowd_out_the_points() -> None:
    """A specimen's brightest spots are its largest objects (brightness grows with
    size): the spots fitted are drawn from all isolated ones, not the brightest."""
    rng = np.random.default_rng(4)
    frames = []
    for _ in range(6):
        points = _frame(rng, n=20) - OFFSET
        blob_xy = rng.uniform(12, 244, (20, 2))
        blobs = render_points((256, 256), blob_xy, rng.uniform(2000, 4000, 20), SIGMA)
        blobs = gaussian_filter(blobs, 2.0) * (1 + 2.0**2 / SIGMA**2)
        frames.append(OFFSET + points + rng.poisson(blobs).astype(np.float64))
    psf = fit_psf_frames(frames, offset_adu=OFFSET, max_spots=60)
    assert psf.sigma_px == pytest.approx(SIGMA, rel=0.1)


def test_no_spots_no_psf() -> None:
    rng = np.random.default_rng(2)
    flat = [OFFSET + rng.poisson(50, (128, 128)).astype(float) for _ in range(3)]
    with pytest.raises(ValueError, match="isolated round spots"):
        fit_psf_frames(flat, offset_adu=OFFSET)


def test_rendered_points_have_the_psf_and_their_peaks() -> None:
    img = render_points((32, 32), np.array([[10.0, 12.0]]), np.array([500.0]), SIGMA)
    from scipy.special import erf

    from pairscope.train._psf_fit import _fit_spot

    assert img[12, 10] == pytest.approx(500)
    centred = erf(0.5 / (SIGMA * np.sqrt(2))) ** 2  # a point's share in its pixel
    assert img.sum() == pytest.approx(500 / centred, rel=1e-3)
    fit = _fit_spot(img[7:18, 5:16])
    assert fit is not None and fit[0] == pytest.approx(SIGMA, rel=0.01)


def test_random_points_come_in_small_clusters_at_sub_resolution_distances() -> None:
    psf = PsfModel(sigma_px=1.0, n_spots=10, peak_adu=400.0)
    img = random_points((256, 256), psf, np.random.default_rng(3))
    assert img.min() >= 0 and img.max() > 100
    # clusters of close points: some spots are wider than one PSF, none narrower
    assert (img > 0.5 * 400 * np.exp(-0.3)).sum() > 50
