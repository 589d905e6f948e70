"""``pairscope repair``: a run killed with SIGKILL at several moments is finalised."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ome_types
import pytest
import tifffile

import pairscope
from pairscope.io._repair import RunInUseError, repair_run

ROOT = Path(__file__).parents[1]
CLI = [sys.executable, "-m", "pairscope.cli"]


def _start_writer(out: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._io_pairs", str(out), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    return proc, run_dir


def _lines(run_dir: Path) -> int:
    path = run_dir / "pairs.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _kill_after(proc: subprocess.Popen, run_dir: Path, n_lines: int) -> None:
    deadline = time.monotonic() + 60
    while _lines(run_dir) < n_lines or not (run_dir / "run.json").is_file():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.parametrize("n_lines", [0, 3, 40])
def test_kill_9_then_repair_keeps_exactly_the_listed_pairs(tmp_path, n_lines) -> None:
    proc, run_dir = _start_writer(tmp_path)
    _kill_after(proc, run_dir, n_lines)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "running"  # what a hard kill leaves
    listed = _lines(run_dir)
    report = repair_run(run_dir)
    assert report.changed and report.status == "recovered"
    assert report.finalize.pairs == listed == len(pairscope.open_run(run_dir))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "recovered" and info["pairs_written"] == listed
    assert info["status_before_repair"] == "running"
    assert not (run_dir / "writing.lock").exists()
    assert not (run_dir / ".space-reserve").exists()
    run = pairscope.open_run(run_dir)
    for p in run:
        assert p.lowdose[0, 0] == p.index and p.reference[0, 0] == p.index
    for role in ("lowdose", "reference"):
        path = run_dir / f"{role}.ome.tif"
        if not listed:
            assert not path.exists()  # nothing listed in it
            continue
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == listed  # pages past the manifest were cut
            ome = ome_types.from_xml(tif.ome_metadata, validate=True)
            assert tif.series[0].shape[0] == listed
        assert sum(len(im.pixels.planes) for im in ome.images) == 2 * listed
    again = repair_run(run_dir)  # idempotent
    assert not again.changed and again.finalize.pairs == listed
    assert "nothing to do" in "\n".join(again.lines())


def test_cut_manifest_line_and_unlisted_pages_are_removed(tmp_path) -> None:
    proc, run_dir = _start_writer(tmp_path)
    _kill_after(proc, run_dir, 10)
    listed = _lines(run_dir)
    with (run_dir / "pairs.jsonl").open("a") as fh:
        fh.write('{"pair": 999, "lowdose": {"pa')  # an append cut by the crash
    report = repair_run(run_dir)
    assert report.finalize.damaged_lines_removed == 1
    assert report.finalize.pairs == listed
    assert _lines(run_dir) == listed and (
        run_dir / "pairs.jsonl"
    ).read_bytes().endswith(b"\n")


def test_repair_refuses_a_run_being_written_and_the_cli_says_so(tmp_path) -> None:
    proc, run_dir = _start_writer(tmp_path)
    try:
        while _lines(run_dir) < 2:
            time.sleep(0.01)
        with pytest.raises(RunInUseError, match=f"process {proc.pid}"):
            repair_run(run_dir)
        cli = subprocess.run(
            [*CLI, "repair", str(run_dir)], capture_output=True, text=True, cwd=ROOT
        )
        assert cli.returncode == 2 and "Traceback" not in cli.stderr
        assert f"still being written by process {proc.pid}" in cli.stderr
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    cli = subprocess.run(
        [*CLI, "repair", str(run_dir)], capture_output=True, text=True, cwd=ROOT
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip().splitlines()[-1] == str(run_dir)
    assert "kept the" in cli.stderr and "status now 'recovered'" in cli.stderr


def test_repair_of_a_folder_that_is_not_a_run(tmp_path) -> None:
    cli = subprocess.run(
        [*CLI, "repair", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert cli.returncode == 2 and "not a pairscope run folder" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_kill_9_of_a_real_demo_acquisition_then_repair(tmp_path) -> None:
    """The real CLI on the demo microscope, killed mid-run, then repaired."""
    demo = [*CLI, "demo", "--frames", "100000", "--sensor", "256", "--headless",
            "--no-restore", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(
        demo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("*/pairs.jsonl"))
        if found and _lines(found[0].parent) >= 8:
            run_dir = found[0].parent
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert run_dir is not None, "the demo did not write 8 pairs in time"
    report = repair_run(run_dir)
    assert report.status == "recovered"
    run = pairscope.open_run(run_dir)
    assert len(run) == report.finalize.pairs >= 8
    assert all(p.lowdose is not None and p.lowdose.any() for p in run)
    with tifffile.TiffFile(run_dir / "lowdose.ome.tif") as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
    px = ome.images[0].pixels
    assert px.size_t == len(run) and px.physical_size_x == pytest.approx(0.2)


def test_a_damaged_line_between_good_ones_is_never_cut(tmp_path) -> None:
    from pairscope.io._finalize import read_manifest

    path = tmp_path / "pairs.jsonl"
    path.write_text('{"pair": 0}\nnot json\n{"pair": 2}\n{"pair": 3, "lo')
    records, good, damaged = read_manifest(path)
    assert [r["pair"] for r in records] == [0, 2]
    assert damaged == 1 and good == len('{"pair": 0}\nnot json\n{"pair": 2}\n')
