"""Scheduling helpers for the helper threads around an acquisition."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)

BACKGROUND_NICENESS = 10


def deprioritize_current_thread(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's CPU priority (Linux; a no-op elsewhere).

    The restorer and the preview run at a lower priority than the acquisition
    thread, so on a machine with few cores the microscope keeps its pace and the
    preview takes what is left.
    """
    if not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError:  # not permitted, or not per-thread on this OS
        logger.debug(
            "could not lower the priority of %s", threading.current_thread().name
        )
