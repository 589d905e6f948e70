"""Helper threads yield to the acquisition and get their priority back after it
(where the system permits raising it: root, or a RLIMIT_NICE that allows it)."""

from __future__ import annotations

import os
import resource
import threading

import pytest

from pairscope._threads import deprioritize_current_thread, restore_priority

pytestmark = pytest.mark.skipif(
    not hasattr(os, "setpriority"), reason="per-thread priorities are Linux's"
)


def _permitted(niceness: int) -> bool:
    """Whether this process may raise a thread's priority back to ``niceness``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return os.geteuid() == 0 or soft == resource.RLIM_INFINITY or 20 - niceness <= soft


def test_a_helper_gets_its_priority_back_after_the_acquisition() -> None:
    lowered, release = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def helper() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        deprioritize_current_thread(19)
        seen["low"] = os.getpriority(os.PRIO_PROCESS, tid)
        lowered.set()
        release.wait(60)

    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    assert lowered.wait(60), "the helper never ran"
    assert seen["low"] == 19
    restored = restore_priority(thread)
    now = os.getpriority(os.PRIO_PROCESS, thread.native_id)  # type: ignore[arg-type]
    assert restored == _permitted(seen["before"])
    assert now == (seen["before"] if restored else 19)
    assert not restore_priority(thread)  # once only
    release.set()
    thread.join(60)
    assert not restore_priority(thread)  # a finished thread is left alone
