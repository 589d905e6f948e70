"""Separable filters of whole frames by FFT, equal to scipy's direct filters.

A live trust check filters every pair's frames a dozen times (Gaussian derivatives
at two scales, a cubic-spline shift); scipy's direct 1-D passes were a third of its
cost.  A frame padded by the kernel's radius the way scipy extends it (``reflect``:
mirrored, ``nearest``: the edge repeated), transformed once and multiplied by the
kernels' spectra, gives scipy's result inside the frame to float32 precision: the
circular wrap of the transform reaches only the padding.  One transform of a frame
serves every filter of it (the Laplacian of Gaussian and the gradient are one
inverse transform each).

:func:`gaussian_plan` gives the plan of a frame shape and Gaussian scale;
:class:`SeparableFFT` takes any pair of 1-D kernels.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.ndimage as ndi

__all__ = ["GaussianFFT", "SeparableFFT", "gaussian_plan"]

_PAD_MODES = {"reflect": "symmetric", "nearest": "edge"}  # scipy's name: numpy's


class SeparableFFT:
    """Separable filters of float32 frames of one ``shape`` whose kernels reach
    ``radius`` pixels, applied by FFT with scipy's boundary ``mode``."""

    def __init__(
        self, shape: tuple[int, int], radius: int, mode: str = "reflect"
    ) -> None:
        if mode not in _PAD_MODES:
            raise ValueError(f"mode {mode!r}: one of {sorted(_PAD_MODES)}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.radius = int(radius)
        self.mode = mode
        self.size = tuple(
            scipy.fft.next_fast_len(n + 2 * self.radius, real=True) for n in self.shape
        )

    def spectrum(self, image: np.ndarray) -> np.ndarray:
        """The padded frame's spectrum (one per frame, for any number of filters)."""
        img = np.asarray(image, np.float32)
        if img.shape != self.shape:
            raise ValueError(f"frame {img.shape}, plan for {self.shape}")
        padded = np.pad(img, self.radius, mode=_PAD_MODES[self.mode])  # type: ignore[call-overload]
        return scipy.fft.rfft2(padded, s=self.size)

    def transfer(self, kernel_y: np.ndarray, kernel_x: np.ndarray) -> np.ndarray:
        """The 2-D transfer function of the separable filter whose convolution
        kernels (each axis's response to one pixel, centred, odd length at most
        ``2·radius + 1``) are ``kernel_y`` and ``kernel_x``."""
        ty = scipy.fft.fft(self._placed(kernel_y, self.size[0]))
        tx = scipy.fft.rfft(self._placed(kernel_x, self.size[1]))
        return (ty[:, None] * tx[None, :]).astype(np.complex64)

    def apply(self, spectrum: np.ndarray, transfer: np.ndarray) -> np.ndarray:
        """The filtered frame (float32, the plan's shape)."""
        out = scipy.fft.irfft2(spectrum * transfer, s=self.size)
        r = self.radius
        return np.ascontiguousarray(out[r : r + self.shape[0], r : r + self.shape[1]])

    def _placed(self, kernel: np.ndarray, n: int) -> np.ndarray:
        k = np.asarray(kernel, np.float64)
        half = len(k) // 2
        if len(k) % 2 == 0 or half > self.radius:
            raise ValueError(f"kernel of {len(k)} taps for radius {self.radius}")
        placed = np.zeros(n)
        placed[np.arange(-half, half + 1) % n] = k  # centre at 0, wrapped
        return placed


class GaussianFFT(SeparableFFT):
    """``scipy.ndimage.gaussian_filter(image, sigma, order, mode="reflect")`` of
    frames of one shape, by FFT; transfer functions made once per order."""

    TRUNCATE = 4.0  # gaussian_filter's default

    def __init__(self, shape: tuple[int, int], sigma: float) -> None:
        self.sigma = float(sigma)
        super().__init__(shape, int(self.TRUNCATE * self.sigma + 0.5), "reflect")
        self._transfers: dict[tuple[int, int], np.ndarray] = {}
        self._kernels: dict[int, np.ndarray] = {}

    def kernel(self, order: int) -> np.ndarray:
        """The 1-D convolution kernel of derivative ``order`` (scipy's response to
        one pixel; read-only)."""
        k = self._kernels.get(order)
        if k is None:
            impulse = np.zeros(2 * self.radius + 1)
            impulse[self.radius] = 1.0
            k = ndi.gaussian_filter1d(impulse, self.sigma, order=order, mode="constant")
            k.flags.writeable = False
            self._kernels[order] = k
        return k

    def of_order(self, order: tuple[int, int]) -> np.ndarray:
        """The transfer function of the derivative ``order`` (y, x)."""
        t = self._transfers.get(order)
        if t is None:
            t = self.transfer(self.kernel(order[0]), self.kernel(order[1]))
            self._transfers[order] = t
        return t

    def laplacian(self) -> np.ndarray:
        """The Laplacian of Gaussian's transfer function (``(2, 0)`` + ``(0, 2)``)."""
        return self.of_order((2, 0)) + self.of_order((0, 2))

    def __call__(
        self, image: np.ndarray, order: tuple[int, int] = (0, 0)
    ) -> np.ndarray:
        return self.apply(self.spectrum(image), self.of_order(order))


@functools.lru_cache(maxsize=32)
def gaussian_plan(shape: tuple[int, int], sigma: float) -> GaussianFFT:
    """The (cached) Gaussian plan of frames of ``shape`` at ``sigma`` pixels."""
    return GaussianFFT(shape, sigma)
