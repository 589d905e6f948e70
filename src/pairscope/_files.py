"""Crash-safe small-file writes shared by run folders, calibrations and models."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one.

    The bytes go to a temporary file beside ``path``, are fsynced, and the file is
    renamed over ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
