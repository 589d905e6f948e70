"""Live preview: a Qt window and a headless snapshot sink for paired timelapses.

``import pairscope.preview`` does not import Qt; ``PreviewWindow`` is loaded on
first access (it needs qtpy and a Qt binding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._contrast import (
    PANEL_TITLES,
    PanelImage,
    auto_limits,
    panels_for,
    render_panels,
    to_uint8,
    upsample,
)
from ._headless import HeadlessPreview
from ._status import (
    LatestFrames,
    PreviewLink,
    PreviewSink,
    PreviewStatus,
    connect_preview,
)

if TYPE_CHECKING:
    from ._window import PreviewWindow

__all__ = [
    "PANEL_TITLES",
    "HeadlessPreview",
    "LatestFrames",
    "PanelImage",
    "PreviewLink",
    "PreviewSink",
    "PreviewStatus",
    "PreviewWindow",
    "auto_limits",
    "connect_preview",
    "panels_for",
    "render_panels",
    "to_uint8",
    "upsample",
]


def __getattr__(name: str) -> Any:
    if name == "PreviewWindow":
        from ._window import PreviewWindow

        return PreviewWindow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
