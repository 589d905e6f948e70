"""pairscope: paired low-dose / reference acquisition, live restoration, validation.

``import pairscope`` loads neither torch nor Qt: :func:`restore_frame` (which needs
torch) is loaded on first access.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("pairscope")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"


from .io import Run, open_run

if TYPE_CHECKING:
    from .offline import restore as restore_frame

__all__ = ["Run", "__version__", "open_run", "restore_frame"]


def __getattr__(name: str) -> Any:
    """``restore_frame`` on first access (PEP 562), so the package stays light."""
    if name == "restore_frame":
        from .offline import restore

        globals()["restore_frame"] = restore
        return restore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
