"""Typed errors: each names the problem and the fix, and carries a payload."""

from __future__ import annotations


class PairscopeError(Exception):
    """Base class of pairscope's errors."""


class ConfigError(PairscopeError, ValueError):
    """A hardware configuration cannot be used as asked."""


class SettingsError(PairscopeError, ValueError):
    """A settings, sequence or training file cannot be used; the message names the
    file, the field and the fix."""


class PairingError(PairscopeError, ValueError):
    """The cameras cannot form a low-dose / reference pair."""


class CameraFault(PairscopeError, RuntimeError):
    """A camera failed during a run; every earlier pair is kept."""

    def __init__(self, message: str, *, trigger_index: int, camera: str) -> None:
        super().__init__(message)
        self.trigger_index = trigger_index
        self.camera = camera


class StageFault(PairscopeError, RuntimeError):
    """A stage did not reach the position of a trigger; every earlier pair is kept."""

    def __init__(self, message: str, *, trigger_index: int, device: str) -> None:
        super().__init__(message)
        self.trigger_index = trigger_index
        self.device = device


class WriterError(PairscopeError, OSError):
    """The run folder could not be written (full disk, no permission)."""

    def __init__(self, message: str, *, pairs_written: int) -> None:
        super().__init__(message)
        self.pairs_written = pairs_written


class SequenceOverflow(PairscopeError, RuntimeError):
    """A core's circular buffer overflowed; the run stops with status 'overflow'."""


class OutputError(PairscopeError, OSError):
    """A file or folder could not be written (full disk, file-size limit, read-only,
    busy); the message names it, the reason and the fix; ``errno`` is the OS's."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class DamagedRunError(PairscopeError, OSError):
    """A run folder's files hold less than its manifest or ``run.json`` says (a file
    cut short: an incomplete copy, a disk fault); nothing was changed."""


class RestorationError(PairscopeError, ValueError):
    """A model's output is not a restored frame (wrong size, NaN or infinite
    pixels); it is never written or shown as a prediction."""
