"""Scheduling helpers for the helper threads around an acquisition.

Helpers (restorer, preview, trust monitor, fine-tuning) lower their own priority so
the acquisition keeps its pace on a machine with few cores.  Once the acquisition
has ended, what is left of their work (the last checks, a candidate's scoring) is
all that remains to do, so :func:`restore_priority` gives a helper its priority
back where the system permits it (root, or a ``RLIMIT_NICE`` that allows it);
elsewhere it stays low and its end is bounded by its caller's timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

logger = logging.getLogger(__name__)

BACKGROUND_NICENESS = 10
#: native thread ids lowered by :func:`deprioritize_current_thread`: their
#: niceness before
_LOWERED: dict[int, int] = {}


def deprioritize_current_thread(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's CPU priority (Linux; a no-op elsewhere).

    The restorer and the preview run at a lower priority than the acquisition
    thread, so on a machine with few cores the microscope keeps its pace and the
    preview takes what is left.
    """
    if not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError:  # not permitted, or not per-thread on this OS
        logger.debug(
            "could not lower the priority of %s", threading.current_thread().name
        )
        return
    _LOWERED[tid] = before


def lower_process_priority(increment: int) -> None:
    """Lower this (child) process's CPU priority by ``increment`` where the system
    has niceness (not on Windows) and permits it; a no-op elsewhere."""
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(increment)


def restore_priority(thread: threading.Thread | None) -> bool:
    """Give a helper ``thread`` that lowered its priority the priority it had
    before, once the acquisition it yielded to has ended; ``True`` if done (where
    not permitted it stays low)."""
    if thread is None or not thread.is_alive():
        return False
    tid = thread.native_id
    if tid is None or tid not in _LOWERED:
        return False
    return restore_process_priority(tid, _LOWERED.pop(tid))


def restore_process_priority(pid: int, niceness: int | None = None) -> bool:
    """Set ``pid``'s (a thread id or a child process) niceness back to
    ``niceness`` (default: this process's); ``True`` if permitted and done."""
    if not hasattr(os, "setpriority"):
        return False
    try:
        if niceness is None:
            niceness = os.getpriority(os.PRIO_PROCESS, 0)
        if os.getpriority(os.PRIO_PROCESS, pid) > niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError:  # not permitted (raising priority needs CAP_SYS_NICE), or gone
        return False
    return True
