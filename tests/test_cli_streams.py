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


def test_ctrl_c_while_the_rig_is_set_up_is_a_clean_cancel(tmp_path: Path) -> None:
    """Ctrl-C as soon as the config is announced (the cores are loading, no
    acquisition yet): the run stops, exit 130, no traceback, every pair listed
    is readable; it is not ignored until the run completes."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pairscope.cli", "demo", "--frames", "5000",
            "--sensor", "64", "--no-restore", "--no-progress", "--headless",
            "--out", str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the config's device code is announced
    assert "imports Python device code" in first, first
    os.kill(proc.pid, signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    for run_dir in tmp_path.iterdir():  # a run folder, where one was made
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "cancelled" and info["pairs_written"] < 5000
        assert len(pairscope.open_run(run_dir)) == info["pairs_written"]


def test_ctrl_c_before_a_command_handles_it_is_one_line(monkeypatch, capsys) -> None:
    """A KeyboardInterrupt while pairscope is still importing its command."""
    from pairscope import cli

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["info", "missing.cfg"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "pairscope: interrupted (Ctrl-C)"
