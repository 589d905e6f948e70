"""The PSF measured on reference frames, and point emitters rendered through it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.sparse.csgraph import connected_components

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


def test_random_points_have_single_rods_beside_their_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two fifths of the clusters are rods: one object (sub-points half a PSF width
    apart on a line, 1.8 times a pair's distance long) as bright as two points;
    without them every elongated blob was points (issue 23)."""
    import pairscope.train._psf_fit as psf_fit

    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    real = psf_fit.render_points

    def keep(shape, xy, peaks, sigma_px):  # type: ignore[no-untyped-def]
        drawn.append((np.asarray(xy), np.asarray(peaks)))
        return real(shape, xy, peaks, sigma_px)

    monkeypatch.setattr(psf_fit, "render_points", keep)
    psf = PsfModel(sigma_px=1.0, n_spots=10, peak_adu=400.0)
    random_points((512, 512), psf, np.random.default_rng(3))
    xy, peaks = drawn[0]
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    close = (dist > 0) & (dist <= 0.5 * psf.sigma_px + 1e-9)
    # rods: chains of sub-points (points and pairs are >= 1 PSF width apart);
    # count them by their ends (one close neighbour)
    rods = int((close.sum(1) == 1).sum()) // 2
    clusters = 512 * 512 / 24**2
    assert 0.3 * clusters < rods < 0.5 * clusters
    in_rods = close.any(1)
    # a rod is as bright as two points: its sub-points share two peaks
    rod_light = peaks[in_rods].sum() / rods
    point_light = peaks[~in_rods].mean()
    assert 1.5 < rod_light / point_light < 2.5
    # as long as the matched rods of pairs up to 8 PSF widths apart
    _, label = connected_components(close[in_rods][:, in_rods], directed=False)
    sub = dist[in_rods][:, in_rods]
    longest = max(sub[label == k][:, label == k].max() for k in np.unique(label))
    assert 1.8 * 7 * psf.sigma_px < longest < 1.8 * 8 * psf.sigma_px


def test_random_points_come_in_small_clusters_at_sub_resolution_distances() -> None:
    psf = PsfModel(sigma_px=1.0, n_spots=10, peak_adu=400.0)
    img = random_points((256, 256), psf, np.random.default_rng(3))
    assert img.min() >= 0 and img.max() > 100
    # clusters of close points: some spots are wider than one PSF, none narrower
    assert (img > 0.5 * 400 * np.exp(-0.3)).sum() > 50
