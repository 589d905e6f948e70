"""Progress bars: live on a terminal, a few whole lines in a log file or a pipe."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import tqdm.std

from pairscope import _progress
from pairscope._progress import PLAIN_INTERVAL_S, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """tqdm's clock, advanced by hand (and no monitor thread on the real one)."""
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    return now


def test_a_log_file_gets_a_few_whole_lines(fake_clock: list[float]) -> None:
    log = io.StringIO()
    steps = 600  # one a second: ten minutes
    for _ in progress(range(steps), desc="scoring", unit="pair", file=log):
        fake_clock[0] += 1.0
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("scoring: 0/600 pair")
    assert lines[-1].startswith("scoring: 600/600 pair")
    # start, end, and about one per PLAIN_INTERVAL_S in between (not one per step)
    expected = steps / PLAIN_INTERVAL_S
    assert expected - 2 <= len(lines) - 2 <= expected + 2, lines


def test_a_terminal_gets_a_live_bar(fake_clock: list[float]) -> None:
    tty = _Terminal()
    for _ in progress(range(50), desc="scoring", file=tty):
        fake_clock[0] += 1.0
    text = tty.getvalue()
    assert text.count("\r") > 10  # redrawn in place
    assert "50/50" in text


def test_disabled_writes_nothing() -> None:
    log = io.StringIO()
    assert list(progress(range(5), desc="x", disable=True, file=log)) == [0, 1, 2, 3, 4]
    assert log.getvalue() == ""


def test_updated_by_hand_without_total(fake_clock: list[float]) -> None:
    log = io.StringIO()
    bar = progress(desc="acquiring", unit="pair", file=log)
    for _ in range(3):
        fake_clock[0] += 1.0
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("acquiring: 3/? pair")


def test_stderr_pipe_of_a_real_process() -> None:
    """What ``pairscope ... 2> log`` writes: lines, no carriage returns."""
    code = (
        "from pairscope._progress import progress\n"
        "for _ in progress(range(20000), desc='work', unit='frame'): pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=300
    )
    err = proc.stderr.decode()  # bytes: text mode would turn "\r" into "\n"
    assert proc.returncode == 0, err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("work: 20000/20000 frame")


def test_every_progress_display_goes_through_the_helper() -> None:
    """No module builds its own tqdm bar (the helper decides how to show it)."""
    from pathlib import Path

    root = Path(_progress.__file__).parents[2]
    offenders = []
    for path in [*(root / "src").rglob("*.py"), *(root / "scripts").rglob("*.py")]:
        if path.name == "_progress.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "tqdm(" in text or "tqdm.auto" in text or "rich.progress" in text:
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
