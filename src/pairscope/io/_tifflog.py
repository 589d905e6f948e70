"""tifffile logs an ERROR for every oddity of a damaged file it reads (a cut
description, a page offset past the end); where pairscope checks the file itself
and says what is wrong in one line, those records are collected, not printed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["tifffile_problems"]


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def tifffile_problems() -> Iterator[list[str]]:
    """tifffile's complaints about the files read inside, collected instead of
    logged: pairscope's own checks say in one line what is wrong with a file."""
    found: list[str] = []
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(found), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield found
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
