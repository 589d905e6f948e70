"""The trust monitor's figure: its metrics over time, verdicts as coloured marks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..metrics import new_figure, save_figure
from ._checks import Thresholds

VERDICT_COLOURS = {"ok": "#2a9d3f", "warn": "#e0a100", "alarm": "#d62828"}
PANELS = (
    ("error_excess_local", "local error / noise", "local_ok", "local_alarm"),
    ("error_excess", "frame error / noise", "error_ok", "error_alarm"),
    (
        "consistency_chi2_local",
        "consistency chi² (local)",
        "consistency_local_ok",
        "consistency_local_alarm",
    ),
    ("advantage_db", "model − bicubic (dB)", None, None),
)


def plot_quality(
    lines: Sequence[dict[str, Any]], path: str | Path, thresholds: Thresholds
) -> Path:
    """One panel per metric against the pair index; threshold lines dashed."""
    fig = new_figure((9, 7))
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    x = [ln["pair"] for ln in lines]
    colours = [VERDICT_COLOURS.get(ln["verdict"], "k") for ln in lines]
    for ax, (key, label, ok, alarm) in zip(axes, PANELS, strict=True):
        y = [ln.get(key) for ln in lines]
        pts = [
            (a, b, c) for a, b, c in zip(x, y, colours, strict=True) if b is not None
        ]
        if pts:
            xs, ys, cs = zip(*pts, strict=True)
            ax.plot(xs, ys, color="0.6", lw=0.8)
            ax.scatter(xs, ys, c=cs, s=12, zorder=3)
        for name, style in ((ok, "--"), (alarm, ":")):
            if name is not None:
                ax.axhline(getattr(thresholds, name), color="0.3", ls=style, lw=0.8)
        if key == "advantage_db":
            ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xlabel("pair")
    counts = {v: sum(ln["verdict"] == v for ln in lines) for v in VERDICT_COLOURS}
    fig.suptitle(
        "trust monitor: "
        + ", ".join(f"{k} {n}" for k, n in counts.items())
        + "  (dashed: warn level, dotted: alarm level)",
        fontsize=9,
    )
    return save_figure(fig, path)
