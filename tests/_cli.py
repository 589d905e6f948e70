"""A CLI demo run in a child process, waited on until it has logged some pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pairscope


def interrupted_demo(
    out: Path, sig: int, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str, Path]:
    """Start ``pairscope demo --frames 5000 --sensor 64 ... *args``, send ``sig``
    once 5 pairs are listed; returns the process, its stdout and stderr, and the
    manifest."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pairscope.cli", "demo", "--frames", "5000",
            "--sensor", "64", "--no-restore", "--no-progress", "--out", str(out),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    manifest = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("*/pairs.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 5:
            manifest = found[0]
            break
        time.sleep(0.1)
    if manifest is None:
        proc.kill()
        raise AssertionError(f"the run never started: {proc.communicate()[1]}")
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    return proc, stdout, stderr, manifest


def assert_cancelled_cleanly(stdout: str, stderr: str, manifest: Path) -> None:
    """No traceback, the run folder printed last, every listed pair readable."""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    run_dir = Path(stdout.strip().splitlines()[-1])
    assert run_dir == manifest.parent
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "cancelled"
    listed = len(manifest.read_text().splitlines())
    assert 5 <= listed < 5000 and info["pairs_written"] == listed
    assert len(pairscope.open_run(run_dir)) == listed


__all__ = ["assert_cancelled_cleanly", "interrupted_demo"]
