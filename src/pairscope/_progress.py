"""Progress bars that suit where they are written.

Every progress display in pairscope goes through :func:`progress`: on a terminal a
live tqdm bar, in a notebook tqdm's widget, and where stderr is a file or a pipe
(a log, ``nohup``, a batch job) a plain line when the bar starts, at most one every
:data:`PLAIN_INTERVAL_S` seconds, and one when it ends, with no carriage returns
or terminal escapes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

# no tqdm monitor thread: it outlives every bar (a daemon until the process ends)
# and only tunes how often a bar redraws
tqdm.monitor_interval = 0

__all__ = ["PLAIN_INTERVAL_S", "progress"]

T = TypeVar("T")

#: seconds between two progress lines where stderr is not a terminal
PLAIN_INTERVAL_S = 30.0
_PLAIN_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A stream for tqdm that writes each of its in-place redraws as a whole line
    (a repeated line once)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        for part in _ESCAPES.sub("", text).replace("\r", "\n").split("\n"):
            line = part.strip()
            if line and line != self._last:
                self._stream.write(line + "\n")
                self._last = line
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str = "",
    unit: str = "it",
    total: float | None = None,
    disable: bool = False,
    leave: bool = True,
    file: TextIO | None = None,
) -> tqdm[T]:
    """A tqdm progress bar over ``iterable`` (or updated by hand) on ``file``
    (stderr): live on a terminal, occasional plain lines otherwise (module doc)."""
    stream = sys.stderr if file is None else file
    kwargs: dict[str, Any] = {
        "desc": desc,
        "unit": unit,
        "total": total,
        "disable": disable,
        "leave": leave,
    }
    if not disable and file is None and _in_notebook():
        from tqdm.auto import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, **kwargs)
    if disable or _is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    return tqdm(
        iterable,
        file=_Lines(stream),
        mininterval=PLAIN_INTERVAL_S,
        maxinterval=PLAIN_INTERVAL_S,
        bar_format=_PLAIN_FORMAT,
        **kwargs,
    )
