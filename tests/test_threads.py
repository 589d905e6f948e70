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


def test_a_helper_thread_runs_its_calls_in_order_and_hands_back_their_errors() -> None:
    from pairscope._threads import HelperThread

    started: list[str] = []
    helper = HelperThread("test-helper", on_start=lambda: started.append("on"))
    done: list[int] = []

    def fail() -> None:
        raise ValueError("this call failed")

    futures = [helper.submit(lambda i=i: done.append(i) or i) for i in range(5)]
    failed = helper.submit(fail)
    assert [f.result(timeout=30) for f in futures] == list(range(5))
    with pytest.raises(ValueError, match="this call failed"):
        failed.result(timeout=30)
    assert (
        helper.submit(lambda: "after an error").result(timeout=30) == "after an error"
    )
    assert done == list(range(5)) and started == ["on"]
    thread = helper.thread
    helper.close()
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive()
