"""Cubic-spline resampling by whole-frame shifts and integer zooms, as 1-D filters.

A cubic B-spline interpolation at a fixed fraction of a pixel is the same linear
filter at every pixel, separable in y and x: its response to one pixel (scipy's own
``ndimage.shift`` of an impulse; the infinite tail cut below 1e-7) convolved along
each axis gives scipy's result to float precision, several times faster than
``ndimage.shift`` / ``ndimage.zoom``, which prefilter the whole frame and then
interpolate point by point.  Used by the camera registration
(:func:`shift_frame`) and the bicubic baseline (:func:`upsample_cubic`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.ndimage as ndi

from ._fft_filter import SeparableFFT

__all__ = ["shift_frame", "upsample_cubic"]


def shift_frame(
    image: np.ndarray, shift: np.ndarray | tuple[float, float]
) -> np.ndarray:
    """``scipy.ndimage.shift(image, shift, order=3, mode="nearest")`` of a 2-D
    frame, about six times faster.

    A cubic-spline shift by a fraction of a pixel is the same linear filter at
    every pixel, separable in y and x: each axis is one convolution with the
    shift's response to a single pixel (found once per fraction; its infinite
    tail cut below 1e-7), after the whole pixels have moved by copying.  More
    than 6 pixels from the frame's edge it equals scipy's to float32 precision;
    nearer, the frame's edge value is repeated as scipy's does, but the two
    splines' boundary handling differ (tested: ``tests/test_calibration.py``)."""
    out = np.asarray(image, np.float32)
    parts = []
    for axis, s in enumerate(shift):
        whole = math.floor(float(s) + 0.5)
        parts.append(round(float(s) - whole, 6))
        if whole:  # first, so that what comes from outside is the edge's value
            out = _whole_shift(out, whole, axis)
    if not any(parts):
        return out
    plan, transfer = _fraction_plan(out.shape, parts[0], parts[1], "nearest")
    return plan.apply(plan.spectrum(out), transfer)


@functools.lru_cache(maxsize=64)
def _fraction_plan(
    shape: tuple[int, int], part_y: float, part_x: float, mode: str
) -> tuple[SeparableFFT, np.ndarray]:
    """The FFT plan and transfer function of the separable shift by ``(part_y,
    part_x)`` pixels (a whole frame's fractional shifts: one transform; the
    whole pixels moved first commute with it)."""
    ky, kx = _fraction_filter(part_y), _fraction_filter(part_x)
    plan = SeparableFFT(shape, max(len(ky), len(kx)) // 2, mode)
    return plan, plan.transfer(ky, kx)


@functools.lru_cache(maxsize=256)
def _fraction_filter(part: float) -> np.ndarray:
    """The cubic-spline shift by ``part`` (|part| <= 0.5 px) as a centred 1-D
    filter (its response to one pixel)."""
    n = 63
    impulse = np.zeros(n)
    impulse[n // 2] = 1.0
    h = ndi.shift(impulse, part, order=3, mode="constant")
    mid = n // 2
    reach = int(np.max(np.abs(np.nonzero(np.abs(h) > 1e-7)[0] - mid))) + 1
    return h[mid - reach : mid + reach + 1]


def _whole_shift(image: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``image`` moved by ``k`` whole pixels along ``axis``, edges repeated."""
    n = image.shape[axis]
    k = max(-n, min(n, k))
    index = np.clip(np.arange(n) - k, 0, n - 1)
    return np.take(image, index, axis=axis)


def upsample_cubic(image: np.ndarray, factor: int) -> np.ndarray:
    """``ndimage.zoom(image, factor, order=3, mode="reflect", grid_mode=True)`` on
    the last two axes, for an integer ``factor``, as ``factor`` phase filters per
    axis (fine pixel ``p`` of coarse pixel ``i`` samples ``i + (p + 0.5)/factor -
    0.5``); equal to scipy's to float precision, edges included."""
    out = np.asarray(image)
    for axis in (out.ndim - 1, out.ndim - 2):
        shape = list(out.shape)
        shape[axis] *= factor
        fine = np.empty(shape, out.dtype)
        for p in range(factor):
            offset = (p + 0.5) / factor - 0.5  # where phase p samples
            phase = out
            if offset:
                h = _fraction_filter(round(-offset, 6))
                phase = ndi.convolve1d(out, h, axis=axis, mode="reflect")
            index = [slice(None)] * out.ndim
            index[axis] = slice(p, None, factor)
            fine[tuple(index)] = phase
        out = fine
    return out
