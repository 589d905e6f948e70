"""Display mapping for the preview, pure numpy: contrast, upsampling, panels.

Shared by the Qt window and the headless sink so both show the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "AUTO_PERCENTILES",
    "PANEL_TITLES",
    "PanelImage",
    "auto_limits",
    "diverging_lut",
    "nice_length_um",
    "panels_for",
    "render_panels",
    "to_uint8",
    "upsample",
]

AUTO_PERCENTILES = (0.5, 99.5)
PANEL_TITLES = ("Low-dose (upsampled)", "Restored", "Reference", "Restored − reference")
_MAX_SAMPLES = 2**18  # percentiles of larger frames use a regular subsample

Limits = tuple[float, float]


def auto_limits(
    image: np.ndarray,
    percentiles: tuple[float, float] = AUTO_PERCENTILES,
    *,
    symmetric: bool = False,
) -> Limits:
    """Display limits at the given percentiles of the finite pixels of ``image``.

    ``symmetric=True`` returns ``(-m, m)`` with ``m`` the upper percentile of
    ``|image|`` (for differences).  Never returns an empty range.
    """
    step = max(1, int(np.sqrt(image.size / _MAX_SAMPLES)))
    sample = np.asarray(image[::step, ::step], dtype=np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        m = float(np.percentile(np.abs(sample), percentiles[1]))
        m = m if m > 0 else 1.0
        return -m, m
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    return lo, (hi if hi > lo else lo + 1.0)


def to_uint8(image: np.ndarray, limits: Limits) -> np.ndarray:
    """Map ``limits[0]..limits[1]`` linearly to 0..255 (clipped; NaN → 0)."""
    lo, hi = limits
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = (np.asarray(image, dtype=np.float32) - lo) * scale
    np.clip(out, 0, 255, out=out)
    return np.nan_to_num(out, nan=0.0).astype(np.uint8)


def upsample(
    image: np.ndarray,
    factor: int,
    method: Literal["nearest", "bilinear"] = "nearest",
) -> np.ndarray:
    """Upsample a 2-D frame by an integer ``factor`` for display (float32 out).

    ``nearest`` repeats pixels (shows what the camera measured); ``bilinear``
    interpolates between pixel centres (edges clamped).
    """
    img = np.asarray(image, dtype=np.float32)
    if factor <= 1:
        return img
    if method == "nearest":
        return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)
    if method != "bilinear":
        raise ValueError(f"method must be 'nearest' or 'bilinear', got {method!r}")

    def coords(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
        i0 = np.floor(x).astype(np.intp)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (x - i0).astype(np.float32)

    y0, y1, wy = coords(img.shape[0])
    x0, x1, wx = coords(img.shape[1])
    rows = img[y0] * (1 - wy)[:, None] + img[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def diverging_lut() -> np.ndarray:
    """A (256, 3) uint8 blue-white-red lookup table (white at the centre)."""
    blue = np.array([33, 102, 172], np.float32)
    red = np.array([178, 24, 43], np.float32)
    white = np.full(3, 247, np.float32)
    t = np.linspace(-1, 1, 256, dtype=np.float32)[:, None]
    lut = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return np.round(lut).astype(np.uint8)


_LUT = diverging_lut()


def nice_length_um(target: float) -> float:
    """The largest 1-2-5 length (µm) not above ``target``."""
    if target <= 0:
        return 1.0
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**exp <= target:
            return float(m * 10**exp)
    return float(10**exp)


@dataclass(frozen=True, slots=True)
class PanelImage:
    """One display panel: 8-bit pixels or a placeholder message.

    ``pixels`` is ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8, or ``None`` for a
    placeholder of ``shape`` showing ``note``; ``limits`` are the data values
    mapped to black and white (or to blue and red).
    """

    title: str
    pixels: np.ndarray | None
    shape: tuple[int, int]
    limits: Limits | None = None
    note: str = ""


def _crop_common(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:h, :w], b[:h, :w]


def render_panels(
    lowdose: np.ndarray,
    restored: np.ndarray | None,
    reference: np.ndarray | None,
    *,
    factor: int,
    limits: Limits | Sequence[Limits | None] | None = None,
    same_instant: bool = True,
    method: Literal["nearest", "bilinear"] = "nearest",
    percentiles: tuple[float, float] = AUTO_PERCENTILES,
) -> list[PanelImage]:
    """The four preview panels, in :data:`PANEL_TITLES` order.

    ``limits=None`` is automatic contrast per panel (the difference symmetric);
    one manual ``(low, high)`` applies to the three intensity panels and the
    difference is shown at ``±(high - low) / 2``; a sequence of four gives each
    panel its own limits (``None``: automatic).  ``same_instant=False`` (the
    restored frame is of another pair) replaces the difference by a placeholder.
    """
    per_panel = _per_panel(limits)
    low = upsample(lowdose, factor, method)
    shape = (int(low.shape[0]), int(low.shape[1]))

    def gray(i: int, img: np.ndarray | None, note: str) -> PanelImage:
        if img is None:
            return PanelImage(PANEL_TITLES[i], None, shape, note=note)
        lim = per_panel[i] or auto_limits(img, percentiles)
        return PanelImage(PANEL_TITLES[i], to_uint8(img, lim), img.shape[:2], lim)

    panels = [
        gray(0, low, ""),
        gray(1, restored, "no restored frame yet"),
        gray(2, reference, "no reference for this pair"),
    ]
    if restored is None or reference is None or not same_instant:
        why = (
            "no reference for this pair"
            if reference is None
            else "no restored frame of this pair"
        )
        panels.append(PanelImage(PANEL_TITLES[3], None, shape, note=why))
        return panels
    a, b = _crop_common(np.asarray(restored, np.float32), np.asarray(reference))
    diff = a - b.astype(np.float32)
    lim = per_panel[3] or auto_limits(diff, percentiles, symmetric=True)
    rgb = _LUT[to_uint8(diff, lim)]
    panels.append(PanelImage(PANEL_TITLES[3], rgb, diff.shape[:2], lim))
    return panels


def _per_panel(
    limits: Limits | Sequence[Limits | None] | None,
) -> list[Limits | None]:
    if limits is None:
        return [None] * 4
    if len(limits) == 2 and all(isinstance(v, (int, float)) for v in limits):
        lo, hi = float(limits[0]), float(limits[1])  # type: ignore[arg-type]
        half = max((hi - lo) / 2, 1e-12)
        return [(lo, hi), (lo, hi), (lo, hi), (-half, half)]
    out = [None if v is None else (float(v[0]), float(v[1])) for v in limits]  # type: ignore[index]
    if len(out) != 4:
        raise ValueError(f"give 4 per-panel limits, got {len(out)}")
    return out


def panels_for(
    pair: Any,
    frame: Any | None,
    *,
    limits: Limits | Sequence[Limits | None] | None = None,
    method: Literal["nearest", "bilinear"] = "nearest",
    reference_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[PanelImage]:
    """:func:`render_panels` for a ``Pair`` and a restored frame (or ``None``).

    ``reference_transform`` (e.g. the camera registration) maps the reference onto
    the low-dose camera's frame, where restored frames live, before it is shown and
    subtracted.
    """
    low, ref = pair.lowdose, pair.reference
    if ref is not None and reference_transform is not None:
        ref = reference_transform(ref)
    restored = None if frame is None else frame.image
    grid = ref if ref is not None else restored
    factor = pair.factor if grid is None else max(1, grid.shape[-1] // low.shape[-1])
    return render_panels(
        low,
        restored,
        ref,
        factor=factor,
        limits=limits,
        same_instant=frame is not None and frame.index == pair.index,
        method=method,
    )
