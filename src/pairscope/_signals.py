"""Guarded psygnal signals: a listener that raises cannot stop the others, nor the
component that emits (the restorer's worker, the acquisition).

psygnal (0.16) aborts its emit loop at the first listener that raises, and the
emitter sees the error on every emission.  Here each listener runs in its own
guard: a failure is logged once (with its traceback, for whoever wrote the
listener), counted, and the listener is disconnected after
:data:`MAX_FAILURES` failures, with one more line saying so.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Any

from psygnal import SignalInstance

__all__ = ["MAX_FAILURES", "GuardedSignalInstance"]

logger = logging.getLogger(__name__)
MAX_FAILURES = 3


class GuardedSignalInstance(SignalInstance):
    """A signal whose listeners cannot stop each other, nor the emitter.

    Pass as ``Signal(..., signal_instance_class=GuardedSignalInstance)``;
    ``failures`` counts the failures per listener.
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
                "Listener %s of %s failed; the other listeners still run",
                name,
                self.name,
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
