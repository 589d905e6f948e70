"""Live runs whose helpers keep up whatever the CPU: the acquisition waits for them.

The restorer and the trust monitor run at low priority and skip what they cannot
keep up with (newest wins), so on a busy machine a live run may restore or check
only a few of its pairs.  Tests whose verdict is about *what* was restored or
checked pace the run instead: after each pair, the acquisition thread waits until
the restorer has answered that pair and the trust monitor has dealt with it.  The
wait is bounded by :data:`WAIT_S`, which fails only on a hang.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

WAIT_S = 120.0  # generous: fails only on a hang


class Lockstep:
    """Pass as ``run_live(..., on_started=lockstep)``; call :meth:`check` after.

    ``then``: another ``on_started(acquisition, restorer)`` to call first (its
    listeners run before the wait).  With ``monkeypatch``, the trust monitor that
    ``run_live`` attaches is waited for too, and the helper threads keep the
    acquisition's priority.
    """

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch | None = None,
        then: Any = None,
    ) -> None:
        self.then = then
        self.monitor: Any = None
        self.restorer: Any = None
        self.problems: list[str] = []
        self._restored = 0  # restored frames the monitor has been handed
        self._lock = threading.Lock()
        if monkeypatch is not None:
            import pairscope.live
            import pairscope.preview._headless
            import pairscope.restore._streaming
            import pairscope.trust
            import pairscope.trust._monitor

            # paced, the helpers' priority is not under test: at nice 10-19 beside
            # CPU-bound processes they get ~1 % of a core and a run takes minutes
            for module in (
                pairscope.live,
                pairscope.preview._headless,
                pairscope.restore._streaming,
                pairscope.trust._monitor,
            ):
                monkeypatch.setattr(
                    module, "deprioritize_current_thread", lambda *_a, **_k: None
                )

            attach = pairscope.trust.attach_trust_monitor

            def attach_and_keep(*args: Any, **kw: Any) -> Any:
                self.monitor = attach(*args, **kw)
                return self.monitor

            monkeypatch.setattr(
                pairscope.trust, "attach_trust_monitor", attach_and_keep
            )

    def __call__(self, acquisition: Any, restorer: Any) -> None:
        if self.then is not None:
            self.then(acquisition, restorer)
        self.restorer = restorer
        if restorer is not None:  # after the monitor's listener: it has the frame
            restorer.events.restored.connect(self._on_restored)
        acquisition.events.pairReady.connect(self._wait)

    def check(self) -> None:
        """Fail if any wait ran out (a listener's error never stops the run)."""
        assert not self.problems, self.problems

    def _on_restored(self, _frame: Any) -> None:
        with self._lock:
            self._restored += 1

    def _idle(self) -> bool:
        s = self.restorer.stats()
        if s.restored + s.skipped + s.errors != s.received:
            return False
        with self._lock:
            handed = self._restored
        if handed != s.restored:  # its listeners are still running
            return False
        if self.monitor is None:
            return True
        m = self.monitor.summary()
        return m.checked + m.calibrating + m.errors + m.skipped + m.unmatched == handed

    def _wait(self, pair: Any) -> None:
        if self.restorer is None or pair.lowdose is None:
            return
        deadline = time.monotonic() + WAIT_S
        while not self._idle():
            if time.monotonic() > deadline:
                self.problems.append(f"pair {pair.index}: not done in {WAIT_S:.0f} s")
                return
            time.sleep(0.002)
