"""Signals of a paired acquisition (one psygnal group; Qt is only one listener).

Listeners are isolated: psygnal stops calling later listeners once one raises,
so each listener runs in its own guard here; a failing listener is logged once,
counted, and disconnected after repeated failures.  The run writer is not a
listener: it receives every pair before, and independently of, all of these.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Any

from psygnal import Signal, SignalGroup, SignalInstance

logger = logging.getLogger(__name__)
MAX_FAILURES = 3


class GuardedSignalInstance(SignalInstance):
    """A signal whose listeners cannot stop each other, nor the acquisition.

    Work-around (psygnal 0.16): the emit loop aborts at the first listener that
    raises; this overrides that one loop to run every listener in a guard.
    """

    failures: Counter[str]

    def _run_emit_loop_immediate(self) -> None:
        args = self._emit_queue.popleft()
        for caller in list(self._slots):
            if not caller._is_alive():
                continue
            try:
                caller.cb(args)
            except Exception:
                self._listener_failed(caller)

    def _listener_failed(self, caller: Any) -> None:
        if not hasattr(self, "failures"):
            self.failures = Counter()
        name = _callback_name(caller)
        self.failures[name] += 1
        n = self.failures[name]
        if n == 1:
            logger.exception(
                "Listener %s of %s failed; the acquisition goes on", name, self.name
            )
        if n >= MAX_FAILURES:
            logger.error(
                "Listener %s of %s failed %d times: disconnected", name, self.name, n
            )
            with contextlib.suppress(ValueError):
                self._slots.remove(caller)


def _callback_name(caller: Any) -> str:
    cb = getattr(caller, "_f", None) or getattr(caller, "dereference", lambda: None)()
    return getattr(cb, "__qualname__", None) or repr(caller)


def listener_failures(group: SignalGroup) -> dict[str, int]:
    """Failures per listener across the group's signals (for the run summary)."""
    out: dict[str, int] = {}
    for name in ("started", "pairReady", "pairIncomplete", "error", "finished"):
        sig = getattr(group, name)
        for listener, n in getattr(sig, "failures", Counter()).items():
            out[f"{name}:{listener}"] = n
    return out


class PairedSignals(SignalGroup):
    """Emitted on the acquisition thread: listeners must be quick (enqueue work)."""

    started = Signal(object, signal_instance_class=GuardedSignalInstance)  # run info
    pairReady = Signal(object, signal_instance_class=GuardedSignalInstance)  # Pair
    pairIncomplete = Signal(  # Pair whose partner is missing, reason
        object, str, signal_instance_class=GuardedSignalInstance
    )
    error = Signal(str, signal_instance_class=GuardedSignalInstance)  # in words
    finished = Signal(object, signal_instance_class=GuardedSignalInstance)  # summary
