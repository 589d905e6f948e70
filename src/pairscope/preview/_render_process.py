"""Headless snapshots drawn in a child process.

Drawing a snapshot with matplotlib is interpreter-bound (about 0.6 s each, most of
it holding the interpreter lock): on a thread it delays the acquisition's own
threads by up to a switch interval whenever they wake, which the demo camera's
frame clock measured as a 4 % slower acquisition (``scripts/bench_live.py``).  In
its own process it costs the acquisition nothing but a share of the CPU, at a
lower priority.

The child (``python -m pairscope.preview._render_child NICENESS``) reads snapshot specs on
stdin (:func:`~._snapshot.write_spec`: JSON and ``.npy``, no pickle), saves each
PNG and answers one JSON line on stdout: ``{"ok": path}`` or ``{"error": text,
"errno": n, "strerror": s, "filename": f}`` (an ``OSError`` while saving: the
preview stops writing, as it does in-process).  It ends at stdin's end, so it
ends with its parent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .._threads import LOWEST_NICENESS, restore_process_priority
from ._snapshot import SnapshotSpec, save_snapshot, write_spec

__all__ = ["SnapshotRenderer"]

#: the child's entry point (not imported by the package, so ``-m`` runs it cleanly)
CHILD_MODULE = "pairscope.preview._render_child"

logger = logging.getLogger(__name__)


class SnapshotRenderer:
    """The parent's side: a child process that draws and saves snapshots.

    The child starts on the first :meth:`render` (or :meth:`start`).  Where it
    cannot start, or dies, snapshots are drawn in this process (said once): a
    snapshot is never lost to its renderer.
    """

    def __init__(self, niceness: int | None = None) -> None:
        #: the child's niceness (default ``LOWEST_NICENESS``: snapshots come last)
        self.niceness = LOWEST_NICENESS if niceness is None else niceness
        #: why snapshots are drawn in this process ("" while the child draws them)
        self.fallback_reason = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before it starts or after it failed)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child now (its imports take about a second at low priority)."""
        with self._lock:
            self._child()

    def render(self, spec: SnapshotSpec, path: str | Path) -> Path:
        """Draw ``spec`` and save it at ``path`` (blocks until saved).

        Raises the child's ``OSError`` (a folder that turned read-only or full) as
        an ``OSError``, and its other failures as ``RuntimeError``."""
        with self._lock:
            proc = self._child()
            reply = self._ask(proc, spec, path) if proc is not None else None
        if reply is None:  # no child, or it died on this snapshot
            return save_snapshot(spec, path)
        if "ok" in reply:
            return Path(reply["ok"])
        if reply.get("errno") is not None:
            raise OSError(reply["errno"], reply["strerror"], reply["filename"])
        raise RuntimeError(reply["error"])

    def restore_priority(self) -> bool:
        """Give the child this process's priority (the acquisition is over)."""
        proc = self._proc
        return proc is not None and restore_process_priority(proc.pid)

    def close(self, timeout: float = 30.0) -> None:
        """End the child (it finishes the snapshot it draws)."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    # -- under _lock ------------------------------------------------------------
    def _child(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None or self.fallback_reason or self._closed:
            return self._proc
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH", "")) if p
        )
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(self.niceness)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            self._give_up(f"it could not start: {exc}")
        return self._proc

    def _ask(
        self, proc: subprocess.Popen[bytes], spec: SnapshotSpec, path: str | Path
    ) -> dict[str, Any] | None:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            write_spec(proc.stdin, spec, path)
            line = proc.stdout.readline()
        except (OSError, ValueError):  # a broken pipe: the child is gone
            line = b""
        if not line:
            self._give_up(f"it ended (exit code {proc.poll()})")
            return None
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _give_up(self, why: str) -> None:
        self.fallback_reason = why
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
                proc.wait(5)
        logger.warning(
            "headless preview: its snapshot renderer is not available (%s); drawing "
            "snapshots in this process, which can slow the acquisition while drawing",
            why,
        )
