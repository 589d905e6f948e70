"""pairscope: paired low-dose / reference acquisition, live restoration, validation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pairscope")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"


from .io import Run, open_run
from .offline import restore as restore_frame

__all__ = ["Run", "__version__", "open_run", "restore_frame"]
