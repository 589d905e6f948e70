"""A folder made read-only as a user meets it, for the tests of writes that fail."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """``folder`` cannot be written while inside; yields how it was done.

    Root ignores permissions, so as root the folder becomes a read-only bind mount
    of itself (a real read-only file system, EROFS); otherwise its and its files'
    write permissions are removed (EACCES).  Skips where neither is possible.
    """
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path, mode in modes.items():
            path.chmod(mode & ~0o222)
        try:
            yield "permissions"
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    target = str(folder)
    if subprocess.run(
        ["mount", "--bind", target, target], capture_output=True
    ).returncode:
        pytest.skip(
            "cannot bind-mount here (needed to make a folder read-only as root)"
        )
    try:
        remount = ["mount", "-o", "remount,bind,ro", target]
        if subprocess.run(remount, capture_output=True).returncode:
            pytest.skip("cannot remount a bind mount read-only here")
        yield "read-only mount"
    finally:
        subprocess.run(["umount", target], check=True)


__all__ = ["read_only"]
