"""pairscope: paired low-dose / reference acquisition, live restoration, validation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pairscope")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"


from .io import Run, open_run

__all__ = ["Run", "__version__", "open_run"]
