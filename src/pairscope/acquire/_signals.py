"""Signals of a paired acquisition (one psygnal group; Qt is only one listener).

Listeners are isolated: psygnal stops calling later listeners once one raises,
so each listener runs in its own guard here; a failing listener is logged once,
counted, and disconnected after repeated failures.  The run writer is not a
listener: it receives every pair before, and independently of, all of these.
"""

from __future__ import annotations

from collections import Counter

from psygnal import Signal, SignalGroup

from .._signals import GuardedSignalInstance


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
