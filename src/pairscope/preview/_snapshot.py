"""What a headless snapshot shows, and its drawing (matplotlib Agg, no pyplot).

A :class:`SnapshotSpec` is plain data (8-bit panels, titles, the trust strip's
points) made on the preview's thread; :func:`draw_snapshot` turns it into a figure.
Drawing is the costly, interpreter-bound part (about 0.6 s a snapshot), so the
headless preview does it in a child process (:mod:`._render_process`): the spec
travels there as one JSON line and raw ``.npy`` arrays (:func:`write_spec`,
:func:`read_spec`), never as a pickle.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ._contrast import PanelImage, diverging_lut, nice_length_um
from ._trust import draw_strip

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SnapshotSpec", "TrustPanel", "draw_snapshot", "read_spec", "write_spec"]

#: the trust strip needs only these keys of each ``quality.jsonl`` line
STRIP_KEYS = ("pair", "error_excess_local", "verdict")
NO_MAP = "no reference checked yet"


@dataclass
class TrustPanel:
    """The trust monitor's part of a snapshot: its map over the restored frame
    (``overlay`` RGB uint8; ``None``: no reference checked yet) and its strip of
    local error over time, titled ``text``."""

    title: str
    overlay: np.ndarray | None
    shape: tuple[int, int]
    strip: list[dict[str, Any]] = field(default_factory=list)
    level: float | None = None
    text: str = ""


@dataclass
class SnapshotSpec:
    """One snapshot: four panels, an optional trust panel, the title lines."""

    panels: list[PanelImage]
    pixel_um: float | None
    title: str
    trust: TrustPanel | None = None
    dpi: int = 100


def draw_snapshot(spec: SnapshotSpec) -> Figure:
    """The snapshot's figure (1×4 panels; with the trust monitor 5 panels and a
    strip of its local error over time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    px = spec.pixel_um
    if spec.trust is None:
        fig = Figure(figsize=(4 * 4, 5.2), dpi=spec.dpi, layout="constrained")
        FigureCanvasAgg(fig)
        for ax, panel in zip(fig.subplots(1, 4), spec.panels, strict=True):
            _draw_panel(ax, panel, px)
    else:
        trust = spec.trust
        fig = Figure(figsize=(5 * 4, 7.0), dpi=spec.dpi, layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(2, 5, height_ratios=(4, 1.2))
        for i, panel in enumerate(spec.panels):
            _draw_panel(fig.add_subplot(grid[0, i]), panel, px)
        ax = fig.add_subplot(grid[0, 4])
        if trust.overlay is None:
            _draw_panel(ax, PanelImage(trust.title, None, trust.shape, None, NO_MAP))
        else:
            ax.set_axis_off()
            ax.imshow(trust.overlay, interpolation="nearest")
            _draw_scale_bar(ax, trust.overlay.shape, px)
            ax.set_title(trust.title, fontsize=10)
        strip = fig.add_subplot(grid[1, :])
        draw_strip(strip, trust.strip, trust.level)
        strip.set_title(trust.text, fontsize=9)
    fig.suptitle(spec.title, fontsize=9)
    return fig


def save_snapshot(spec: SnapshotSpec, path: str | Path) -> Path:
    """Draw ``spec`` and write it to ``path`` (PNG)."""
    draw_snapshot(spec).savefig(path)
    return Path(path)


# -- the spec on a byte stream: one JSON line, then the arrays as .npy ------------
def write_spec(stream: IO[bytes], spec: SnapshotSpec, path: str | Path) -> None:
    """Write ``spec`` (to be saved at ``path``) to ``stream``."""
    arrays: list[np.ndarray] = []

    def slot(a: np.ndarray | None) -> int | None:
        if a is None:
            return None
        arrays.append(np.ascontiguousarray(a))
        return len(arrays) - 1

    header: dict[str, Any] = {
        "path": str(path),
        "title": spec.title,
        "pixel_um": spec.pixel_um,
        "dpi": spec.dpi,
        "panels": [
            {
                "title": p.title,
                "pixels": slot(p.pixels),
                "shape": list(p.shape),
                "limits": None if p.limits is None else list(p.limits),
                "note": p.note,
            }
            for p in spec.panels
        ],
        "trust": None,
    }
    if (t := spec.trust) is not None:
        header["trust"] = {
            "title": t.title,
            "overlay": slot(t.overlay),
            "shape": list(t.shape),
            "strip": [{k: ln.get(k) for k in STRIP_KEYS} for ln in t.strip],
            "level": t.level,
            "text": t.text,
        }
    header["arrays"] = len(arrays)
    stream.write(json.dumps(header, allow_nan=True).encode() + b"\n")
    for a in arrays:  # numpy's own file path needs a seekable file, not a pipe
        npy = io.BytesIO()
        np.lib.format.write_array(npy, a, allow_pickle=False)
        stream.write(npy.getbuffer())
    stream.flush()


def read_spec(stream: IO[bytes]) -> tuple[SnapshotSpec, Path] | None:
    """The next ``(spec, path)`` from ``stream``; ``None`` at its end."""
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    pipe = _Reads(stream)  # numpy's own file path needs a seekable file
    arrays = [
        np.lib.format.read_array(pipe, allow_pickle=False)
        for _ in range(int(header["arrays"]))
    ]

    def get(i: int | None) -> np.ndarray | None:
        return None if i is None else arrays[i]

    panels = [
        PanelImage(
            p["title"],
            get(p["pixels"]),
            (int(p["shape"][0]), int(p["shape"][1])),
            None if p["limits"] is None else (p["limits"][0], p["limits"][1]),
            p["note"],
        )
        for p in header["panels"]
    ]
    trust = None
    if (t := header["trust"]) is not None:
        trust = TrustPanel(
            t["title"],
            get(t["overlay"]),
            (int(t["shape"][0]), int(t["shape"][1])),
            t["strip"],
            t["level"],
            t["text"],
        )
    spec = SnapshotSpec(
        panels, header["pixel_um"], header["title"], trust, header["dpi"]
    )
    return spec, Path(header["path"])


class _Reads:
    """Only ``read`` of a stream, so numpy reads it as a stream (pipes too)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.read = stream.read


# -- drawing helpers ------------------------------------------------------------
def _draw_scale_bar(
    ax: Any, shape: tuple[int, ...], pixel_um: float | None, *, light: bool = False
) -> None:
    """A bar of a round length in µm (about a fifth of the width), bottom left,
    with its length above it: white, or black on a ``light`` image."""
    from matplotlib.patches import Rectangle
    from matplotlib.patheffects import withStroke

    if not pixel_um or pixel_um <= 0 or not math.isfinite(pixel_um):
        return
    h, w = shape[:2]
    um = nice_length_um(0.2 * w * pixel_um)
    length, thick = um / pixel_um, max(1.0, 0.015 * h)
    x0, y0 = 0.05 * w - 0.5, 0.95 * h - 0.5 - thick
    fg, bg = ("black", "white") if light else ("white", "black")
    outline = [withStroke(linewidth=2, foreground=bg)]
    ax.add_patch(Rectangle((x0, y0), length, thick, facecolor=fg, edgecolor=bg, lw=0.5))
    ax.text(
        x0 + length / 2,
        y0 - 0.01 * h,
        f"{um:g} µm",
        color=fg,
        ha="center",
        va="bottom",
        fontsize=9,
        path_effects=outline,
    )


def _draw_colour_bar(ax: Any, panel: PanelImage) -> None:
    """The panel's display range as a colour bar: gray ADU, or the signed
    blue-white-red of restored − reference."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    lo, hi = panel.limits or (0.0, 255.0)
    signed = panel.pixels is not None and panel.pixels.ndim == 3
    cmap = ListedColormap(diverging_lut() / 255.0) if signed else "gray"
    bar = ax.figure.colorbar(
        ScalarMappable(Normalize(lo, hi), cmap),
        ax=ax,
        orientation="horizontal",
        fraction=0.05,
        pad=0.02,
    )
    bar.set_label("restored − reference (ADU)" if signed else "ADU", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _draw_panel(ax: Any, panel: PanelImage, pixel_um: float | None = None) -> None:
    ax.set_axis_off()
    if panel.pixels is None:
        ax.imshow(np.full(panel.shape, 64, np.uint8), cmap="gray", vmin=0, vmax=255)
        ax.text(
            0.5,
            0.5,
            panel.note,
            color="white",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_title(panel.title, fontsize=10)
        return
    ax.imshow(panel.pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(panel.title, fontsize=10)
    _draw_colour_bar(ax, panel)
    signed = panel.pixels.ndim == 3  # the blue-white-red difference
    _draw_scale_bar(ax, panel.pixels.shape, pixel_um, light=signed)
