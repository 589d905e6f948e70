"""The trust monitor in the preview: a strip of its metrics over time and its
error map as an overlay (pure numpy + matplotlib Agg; no Qt here)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

__all__ = ["TrustView", "draw_strip", "error_overlay", "render_strip_rgb"]

VERDICT_RGB = {"ok": (42, 157, 63), "warn": (224, 161, 0), "alarm": (214, 40, 40)}


class TrustView:
    """Thread-safe store of the trust results a preview shows (newest last)."""

    def __init__(self, keep: int = 500) -> None:
        self._lock = threading.Lock()
        self._lines: deque[dict[str, Any]] = deque(maxlen=keep)
        self._map: tuple[int, np.ndarray, float] | None = None
        self._outside: tuple[int, np.ndarray, float] | None = None
        self.version = 0

    def put(self, result: Any) -> None:
        """Store a :class:`pairscope.trust.CheckResult` (any thread)."""
        with self._lock:
            self._lines.append(result.line())
            if result.error_map is not None:
                level = float(getattr(result, "ok_level", 0.0) or 0.0)
                self._map = (result.pair, result.error_map, level)
            outside = getattr(result, "outside_map", None)
            if outside is not None:
                alpha = float(result.metrics.get("alpha") or 0.0)
                self._outside = (result.pair, outside.astype(np.float32), alpha)
            self.version += 1

    def lines(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._lines)

    def error_map(self) -> tuple[int, np.ndarray, float] | None:
        """``(pair index, map, ok level)`` of the newest check with a reference."""
        with self._lock:
            return self._map

    def outside_map(self) -> tuple[int, np.ndarray, float] | None:
        """``(pair index, 1 where outside the interval, alpha)`` of the newest
        reference pair checked against a calibrated interval."""
        with self._lock:
            return self._outside

    def text(self) -> str:
        """One line: counts of verdicts and the newest verdict with its reason."""
        lines = self.lines()
        if not lines:
            return "trust: waiting for the first checked pair"
        counts = {v: sum(ln["verdict"] == v for ln in lines) for v in VERDICT_RGB}
        last = lines[-1]
        return (
            f"trust: ok {counts['ok']}, warn {counts['warn']}, alarm "
            f"{counts['alarm']}{_interval_text(lines)} | pair {last['pair']}: "
            f"{last['verdict']} ({last['reason']})"
        )


def _interval_text(lines: list[dict[str, Any]]) -> str:
    """The intervals in a few words: calibrating, or held-out coverage and width."""
    last = lines[-1]
    alpha = last.get("alpha")
    if alpha is None:
        return ""
    if last.get("intervals") != "calibrated":
        return f" | intervals (alpha {alpha:g}): calibrating"
    held = [
        ln["coverage"]
        for ln in lines
        if ln.get("interval_role") == "heldout" and ln.get("coverage") is not None
    ]
    widths = [ln["interval_width"] for ln in lines if ln.get("interval_width")]
    cover = f"held-out coverage {np.mean(held):.2f}" if held else "no held-out pair yet"
    width = f", width {widths[-1]:.3g}" if widths else ""
    return f" | intervals: {cover} (target {1 - alpha:.2f}){width}"


def error_overlay(gray: np.ndarray, error_map: np.ndarray, level: float) -> np.ndarray:
    """RGB ``gray`` (uint8) tinted red where ``error_map`` exceeds ``level``
    (fully red at twice the level); maps of another size are nearest-resampled."""
    h, w = gray.shape
    if error_map.shape != (h, w):
        ys = np.arange(h) * error_map.shape[0] // h
        xs = np.arange(w) * error_map.shape[1] // w
        error_map = error_map[np.ix_(ys, xs)]
    level = level if level > 0 else float(np.percentile(error_map, 99)) or 1.0
    alpha = np.clip((error_map - level) / level, 0.0, 1.0)[..., None] * 0.7
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    red = np.array([255.0, 30.0, 30.0], np.float32)
    return (rgb * (1 - alpha) + red * alpha).astype(np.uint8)


def draw_strip(
    ax: Any, lines: list[dict[str, Any]], ok_level: float | None = None
) -> None:
    """The local error (in noise units) against the pair, coloured by verdict."""
    pts = [(ln["pair"], ln.get("error_excess_local"), ln["verdict"]) for ln in lines]
    ref = [(x, y, v) for x, y, v in pts if y is not None]
    if ref:
        xs, ys, vs = zip(*ref, strict=True)
        ax.plot(xs, ys, color="0.6", lw=0.8)
        ax.scatter(
            xs, ys, s=10, c=[np.array(VERDICT_RGB[v]) / 255 for v in vs], zorder=3
        )
    no_ref = [(x, v) for x, y, v in pts if y is None]
    if no_ref:  # consistency-only checks (no reference): marks on the axis
        xs, vs = zip(*no_ref, strict=True)
        ax.scatter(
            xs,
            [0] * len(xs),
            marker="|",
            c=[np.array(VERDICT_RGB[v]) / 255 for v in vs],
        )
    if ok_level:
        ax.axhline(ok_level, color="0.3", ls="--", lw=0.8)
    ax.set_ylabel("local error / noise", fontsize=8)
    ax.set_xlabel("pair", fontsize=8)
    ax.tick_params(labelsize=7)


def render_strip_rgb(
    lines: list[dict[str, Any]],
    ok_level: float | None,
    size: tuple[int, int] = (900, 140),
) -> np.ndarray:
    """The strip as an RGB uint8 image (for the Qt window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    draw_strip(fig.add_subplot(), lines, ok_level)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
