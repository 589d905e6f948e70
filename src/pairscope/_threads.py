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
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

BACKGROUND_NICENESS = 10
#: what comes last: the trust checks and the headless preview's snapshot drawing
#: (a PNG every few seconds can wait; a check that waits too long is skipped, so
#: the two share what the acquisition, restorer and preview leave)
LOWEST_NICENESS = 19
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


class HelperThread:
    """A daemon thread that runs the calls handed to it, in order: a second core
    for work that splits in two (the trust check's reference comparison beside its
    intervals and structures).  ``on_start`` runs first on the thread (e.g. to lower
    its priority).  Started on the first call; :meth:`close` ends it after the
    calls waiting."""

    def __init__(self, name: str, on_start: Callable[[], None] | None = None) -> None:
        self.name = name
        self.on_start = on_start
        self.thread: threading.Thread | None = None
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on the thread after the calls before it."""
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._run, name=self.name, daemon=True
            )
            self.thread.start()
        future: Future[T] = Future()
        self._calls.put((future, fn))
        return future

    def close(self) -> None:
        """End the thread once the calls waiting have run (does not wait)."""
        if self.thread is not None:
            self._calls.put(None)
            self.thread = None

    def _run(self) -> None:
        if self.on_start is not None:
            self.on_start()
        while (call := self._calls.get()) is not None:
            future, fn = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to whoever waits for it
                    future.set_exception(exc)
