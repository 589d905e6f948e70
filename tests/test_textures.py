"""Extended, textured objects through the PSF for synthetic crops."""

from __future__ import annotations

import numpy as np
import pytest

from pairscope.train._psf_fit import PsfModel, random_points
from pairscope.train._textures import random_textured_objects

PSF = PsfModel(sigma_px=1.0, n_spots=10, peak_adu=400.0)


def _draws(n: int, psf: PsfModel = PSF) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [random_textured_objects((128, 128), psf, rng) for _ in range(n)]


def test_objects_are_extended_unlike_points() -> None:
    """Objects cover a large share of the crop; the points of the same PSF a
    small one."""
    covered = [float((d > 0.1 * d.max()).mean()) for d in _draws(12)]
    points = random_points((128, 128), PSF, np.random.default_rng(7))
    assert min(covered) > 0.05 and float(np.median(covered)) > 0.15
    assert float((points > 0.1 * points.max()).mean()) < 0.05


def test_objects_are_textured_inside() -> None:
    """Inside the objects the intensity varies (texture), and not only by the
    soft edges: the brightest half of an object's pixels is not flat."""
    for d in _draws(8):
        inside = d[d > 0.3 * d.max()]
        bright = np.sort(inside)[len(inside) // 2 :]
        assert bright.std() / bright.mean() > 0.05


def test_objects_are_seen_through_the_psf_as_bright_as_its_spots() -> None:
    """The peak is the measured spots' brightness times a log-normal draw, and a
    wider PSF leaves less fine detail (power beyond 0.25 cycles/px)."""
    peaks = np.array([d.max() / PSF.peak_adu for d in _draws(40)])
    assert peaks.min() > 0 and np.median(peaks) == pytest.approx(np.exp(-0.3), rel=0.3)

    def fine(draws: list[np.ndarray]) -> float:
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128)))
        window = np.outer(np.hanning(128), np.hanning(128))  # no edge leakage
        return float(np.mean([
            (np.abs(np.fft.fft2(window * d / d.max())) ** 2)[f > 0.25].sum()
            for d in draws
        ]))  # fmt: skip

    wide = PsfModel(sigma_px=2.0, n_spots=10, peak_adu=400.0)
    assert fine(_draws(8, wide)) < 0.1 * fine(_draws(8))


def test_objects_are_drawn_from_the_given_rng() -> None:
    a = random_textured_objects((64, 64), PSF, np.random.default_rng(3))
    b = random_textured_objects((64, 64), PSF, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0
