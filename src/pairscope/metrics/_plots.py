"""Validation figures (matplotlib, Agg canvas, imported lazily).

Figures are built with the object-oriented API on an Agg canvas, so no pyplot
state or global backend is touched (safe inside a running Qt application).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ._frc import FRCCurve, frc_resolution

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_frc_curves",
    "plot_metrics_over_time",
    "plot_side_by_side",
    "plot_two_point",
]

PathLike = str | os.PathLike[str]


def new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    return p


def plot_metrics_over_time(
    per_frame: Mapping[str, Mapping[str, Sequence[float]]], path: PathLike
) -> Path:
    """One panel per metric, one line per method, against frame index.

    Parameters
    ----------
    per_frame : mapping
        ``method -> metric -> values per frame``.
    path : path-like
        Output PNG.

    Returns
    -------
    Path
        The written file.
    """
    metrics = sorted({m for d in per_frame.values() for m in d})
    fig = new_figure((6.0, 2.4 * max(len(metrics), 1)))
    axes = fig.subplots(max(len(metrics), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=False):
        for method, d in per_frame.items():
            if metric in d:
                ax.plot(np.asarray(d[metric], dtype=float), label=method)
        ax.set_ylabel(metric)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("frame")
    return save_figure(fig, path)


def plot_frc_curves(
    curves: Mapping[str, FRCCurve], path: PathLike, threshold: float = 1 / 7
) -> Path:
    """FRC curves with the threshold line; the legend gives each resolution.

    Parameters
    ----------
    curves : mapping of str to FRCCurve
        Curves to overlay.
    path : path-like
        Output PNG.
    threshold : float
        Threshold drawn and used for the resolutions in the legend.

    Returns
    -------
    Path
    """
    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for name, c in curves.items():
        res = frc_resolution(c, threshold)
        ax.plot(c.frequencies_per_um, c.correlation, label=f"{name} ({res:.3g} µm)")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("spatial frequency (1/µm)")
    ax.set_ylabel("FRC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_side_by_side(
    crops: Mapping[str, ArrayLike],
    path: PathLike,
    *,
    reference: str | None = None,
    percentiles: tuple[float, float] = (0.1, 99.9),
) -> Path:
    """Crops in a row, all shown with the reference crop's contrast limits.

    Parameters
    ----------
    crops : mapping of str to array_like
        2-D crops, e.g. low-dose (upsampled), baselines, model, reference.
    path : path-like
        Output PNG.
    reference : str, optional
        Key whose percentiles set the display range; default ``"reference"``
        if present, else the first crop.
    percentiles : (float, float)
        Percentiles of the reference mapped to black and white.

    Returns
    -------
    Path
    """
    if not crops:
        raise ValueError("no crops to plot")
    if reference is None:
        reference = "reference" if "reference" in crops else next(iter(crops))
    vmin, vmax = np.percentile(np.asarray(crops[reference], float), percentiles)
    n = len(crops)
    fig = new_figure((2.6 * n, 2.9))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, img) in zip(axes, crops.items(), strict=True):
        ax.imshow(np.asarray(img), cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize="small")
        ax.set_axis_off()
    return save_figure(fig, path)


def plot_two_point(
    fractions: Mapping[str, Mapping[float, float | None]],
    path: PathLike,
    rayleigh_um: float,
    rods_split: Mapping[str, Mapping[float, float | None]] | None = None,
    ideal: Mapping[float, float | None] | None = None,
) -> Path:
    """Fraction of point pairs resolved against separation, per method; beside it,
    with ``rods_split``, the fraction of matched single rods each method splits.

    Parameters
    ----------
    fractions : mapping
        ``method -> separation_um -> fraction resolved`` (from
        :func:`two_point_report`); ``None`` where not tested.
    path : path-like
        Output PNG.
    rayleigh_um : float
        Rayleigh distance ``0.61 λ/NA``, drawn as a vertical line.
    rods_split : mapping, optional
        ``method -> separation_um -> fraction of rods split``.
    ideal : mapping, optional
        ``separation_um -> fraction`` the ideal observer resolves at 5 % rods
        split, drawn as a dashed black line.

    Returns
    -------
    Path
    """

    def curve(d: Mapping[float, float | None]) -> tuple[list[float], list[float]]:
        seps = sorted(s for s, v in d.items() if v is not None)
        return seps, [float(d[s]) for s in seps]  # type: ignore[arg-type]

    panels = 2 if rods_split else 1
    fig = new_figure((6.0 * panels, 4.0))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    for name, d in fractions.items():
        ax.plot(*curve(d), marker="o", label=name)
    if ideal and any(v is not None for v in ideal.values()):
        ax.plot(
            *curve(ideal), "k--", marker="x", label="ideal observer (5 % rods split)"
        )
    ax.axvline(rayleigh_um, color="k", ls=":", lw=1, label="Rayleigh")
    ax.set_xlabel("separation (µm)")
    ax.set_ylabel("fraction of pairs resolved")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize="small")
    if rods_split:
        ax = axes[1]
        for name, d in rods_split.items():
            ax.plot(*curve(d), marker="o", label=name)
        ax.axhline(0.05, color="k", ls="--", lw=1, label="5 %: inventing above")
        ax.set_xlabel("separation the rod is matched to (µm)")
        ax.set_ylabel("fraction of single rods split")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize="small")
    return save_figure(fig, path)
