"""The OME-Zarr format: same manifest-first guarantee, real kill -9, OME-Zarr 0.5."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pairscope
from pairscope.errors import WriterError
from pairscope.io import RunWriter
from pairscope.io._repair import repair_run
from pairscope.napari import read_run

from ._io_pairs import RUN_INFO, make_pair

ts = pytest.importorskip("tensorstore")
ROOT = Path(__file__).parents[1]


def _zarr_json(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())


def test_sparse_run_as_ome_zarr(tmp_path) -> None:
    writer = RunWriter(tmp_path, commit_interval_s=0.01, format="ome-zarr")
    writer.start(RUN_INFO)
    pairs = [make_pair(k, reference=k % 3 == 0) for k in range(7)]
    for p in pairs:
        writer.submit(p)
    assert writer.close() == 7
    run = pairscope.open_run(writer.run_dir)
    assert run.info["format"] == "ome-zarr" and run.info["status"] == "completed"
    for p, back in zip(pairs, run, strict=True):
        assert np.array_equal(back.lowdose, p.lowdose)
        assert (back.reference is None) == (p.reference is None)
        if p.reference is not None:
            assert np.array_equal(back.reference, p.reference)
    store = writer.run_dir / "run.ome.zarr"
    low = _zarr_json(store / "lowdose")["attributes"]
    scale = low["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert low["ome"]["version"] == "0.5" and scale[0]["scale"] == [1.0, 0.2, 0.2]
    ref = _zarr_json(store / "reference")["attributes"]
    assert [p["pair"] for p in ref["pairscope"]["planes"]] == [0, 3, 6]
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
                   "path": str(store / "reference" / "0")}}).result()  # fmt: skip
    assert arr.shape == (3, 32, 32)  # exactly the listed frames
    layers = {kw["name"]: d for d, kw, _ in read_run(str(writer.run_dir))}
    assert layers["reference"].shape == (3, 32, 32)


def test_shape_change_is_refused_with_a_clear_message(tmp_path) -> None:
    writer = RunWriter(tmp_path, commit_interval_s=0.01, format="ome-zarr")
    writer.start(RUN_INFO)
    writer.submit(make_pair(0))
    writer.submit(make_pair(1, binning=4))
    deadline = time.monotonic() + 60  # a bound for a hang only
    while writer.error is None:  # the writing thread meets the new shape
        assert time.monotonic() < deadline, "the writer never refused the shape"
        time.sleep(0.01)
    with pytest.raises(WriterError, match="holds one frame shape"):
        writer.submit(make_pair(2))
    with pytest.raises(WriterError):
        writer.close()
    assert len(pairscope.open_run(writer.run_dir)) == 1


@pytest.mark.parametrize("n_lines", [2, 25])
def test_kill_9_then_repair(tmp_path, n_lines) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._io_pairs", str(tmp_path), "0", "ome-zarr"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    run_dir = Path(proc.stdout.readline().strip())
    manifest = run_dir / "pairs.jsonl"
    deadline = time.monotonic() + 60
    while not manifest.is_file() or manifest.read_bytes().count(b"\n") < n_lines:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    listed = manifest.read_bytes().count(b"\n")
    report = repair_run(run_dir)
    assert report.status == "recovered" and report.finalize.pairs == listed
    run = pairscope.open_run(run_dir)
    assert len(run) == listed
    for p in run:
        assert p.lowdose[0, 0] == p.index and p.reference[0, 0] == p.index
    assert not repair_run(run_dir).changed


def test_cli_demo_writes_ome_zarr_with_format_option(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "pairscope.cli", "demo", "--frames", "6",
            "--sensor", "64", "--interval-ms", "0", "--headless", "--no-restore",
            "--no-progress", "--format", "ome-zarr", "--out", str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["format"] == "ome-zarr" and info["status"] == "completed"
    assert (run_dir / "run.ome.zarr").is_dir()
    assert not list(run_dir.glob("*.ome.tif"))
    run = pairscope.open_run(run_dir)
    assert len(run) == 6 and run[5].lowdose is not None
    assert run[5].reference.shape == (64, 64)
