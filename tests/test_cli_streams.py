"""A terminal that goes away: the run goes on, every pair is kept.

``pairscope demo 2>&1 | head -c 300`` closes the pipe after 300 bytes; closing the
terminal sends SIGHUP.  Neither may cost a pair or leave a run 'running'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pairscope

from ._cli import assert_cancelled_cleanly, interrupted_demo


def test_a_closed_output_pipe_costs_no_pair(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pairscope.cli", "demo", "--frames", "30",
            "--sensor", "64", "--interval-ms", "0", "--no-restore", "--headless",
            "--out", str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.read(300)  # what `| head -c 300` takes, then it exits
    proc.stdout.close()
    code = proc.wait(timeout=300)
    (run_dir,) = tmp_path.iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert code == 0
    assert info["status"] == "completed" and info["pairs_written"] == 30
    assert len(pairscope.open_run(run_dir)) == 30


def test_sighup_stops_the_run_cleanly(tmp_path: Path) -> None:
    """The terminal closes: stopped after the current frame, every pair kept."""
    proc, out, err, manifest = interrupted_demo(
        tmp_path, signal.SIGHUP, "--interval-ms", "0", "--headless"
    )
    assert proc.returncode == 129, err
    assert_cancelled_cleanly(out, err, manifest)
