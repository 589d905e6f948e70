"""The snapshot renderer's child process (:mod:`._render_process` starts it).

``python -m pairscope.preview._render_child NICENESS``: lowers its priority, warms
matplotlib up, then draws and saves each snapshot spec read on stdin and answers
one JSON line per spec on stdout; it ends at stdin's end (with its parent).
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

from .._threads import lower_process_priority
from ._snapshot import read_spec, save_snapshot


def _serve(source: IO[bytes], replies: IO[bytes]) -> None:
    while (job := read_spec(source)) is not None:
        spec, path = job
        reply: dict[str, Any]
        try:
            reply = {"ok": str(save_snapshot(spec, path))}
        except OSError as exc:
            reply = {
                "error": str(exc),
                "errno": exc.errno,
                "strerror": exc.strerror,
                "filename": None if exc.filename is None else str(exc.filename),
            }
        except Exception as exc:  # said by the parent (its log), never lost here
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()


def _warm_up() -> None:
    """Pay matplotlib's imports, font loading and first PNG now (about a second of
    CPU), while the parent starts its run, not when its first pairs flow."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=50)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow([[0.0, 1.0], [1.0, 0.0]], cmap="gray")
    ax.set_title("warm-up")
    fig.savefig(io.BytesIO(), format="png")


def main(argv: list[str]) -> int:
    lower_process_priority(int(argv[0]) if argv else 0)
    _warm_up()
    # the replies get their own copy of stdout; anything else printed goes to stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(sys.stdin.buffer, replies)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
