"""Headless snapshots are drawn in a child process: the same pixels as drawn here,
and never lost to the renderer (a child that cannot start or dies mid-run)."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pairscope.preview import HeadlessPreview, PanelImage
from pairscope.preview import _render_process as render_process
from pairscope.preview._render_process import SnapshotRenderer
from pairscope.preview._snapshot import (
    SnapshotSpec,
    TrustPanel,
    read_spec,
    save_snapshot,
    write_spec,
)

from .test_preview import make_pair, make_restored

HANG_S = 120.0  # bounds that fail only on a hang


@pytest.fixture(autouse=True)
def _child_at_full_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's priority is not under test here: at nice 19 beside CPU-bound
    processes it gets ~1 % of a core, and its start-up alone took ~110 s of a
    120 s bound."""
    monkeypatch.setattr(render_process, "LOWEST_NICENESS", 0)


def _spec() -> SnapshotSpec:
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    panels = [
        PanelImage("Low-dose", gray, (64, 64), (100.0, 900.0)),
        PanelImage("Restored", gray[::-1], (64, 64), (90.0, 1000.0)),
        PanelImage("Reference", None, (64, 64), None, "no reference yet"),
        PanelImage("Restored − reference", rgb, (64, 64), (-50.0, 50.0)),
    ]
    strip = [
        {"pair": 1, "error_excess_local": 1.2, "verdict": "ok", "extra": "dropped"},
        {"pair": 2, "error_excess_local": None, "verdict": "warn"},
        {"pair": 3, "error_excess_local": 4.5, "verdict": "alarm"},
    ]
    trust = TrustPanel(
        "Trust interval (pair 3)", rgb, (64, 64), strip, 2.0, "trust: ok 1"
    )
    return SnapshotSpec(panels, 0.1, "pair 3\nstatus line", trust, dpi=60)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + HANG_S
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.is_file(), f"{path.name} was not written within {HANG_S:.0f} s"


def test_spec_travels_without_pickle_and_draws_the_same_pixels(tmp_path: Path) -> None:
    spec = _spec()
    stream = io.BytesIO()
    write_spec(stream, spec, tmp_path / "x.png")
    assert b"pickle" not in stream.getvalue()[:200]
    stream.seek(0)
    got = read_spec(stream)
    assert got is not None and read_spec(stream) is None  # one spec, then the end
    back, path = got
    assert path == tmp_path / "x.png"
    assert back.title == spec.title and back.pixel_um == spec.pixel_um
    for a, b in zip(back.panels, spec.panels, strict=True):
        assert (a.title, a.shape, a.limits, a.note) == (
            b.title,
            b.shape,
            b.limits,
            b.note,
        )
        assert (a.pixels is None and b.pixels is None) or np.array_equal(
            a.pixels, b.pixels
        )
    assert back.trust is not None and spec.trust is not None
    assert np.array_equal(back.trust.overlay, spec.trust.overlay)
    assert back.trust.strip[1] == {
        "pair": 2,
        "error_excess_local": None,
        "verdict": "warn",
    }

    renderer = SnapshotRenderer()
    try:
        drawn = renderer.render(spec, tmp_path / "child.png")
        child = renderer.pid
    finally:
        renderer.close()
    assert child is not None and child != os.getpid()
    assert renderer.fallback_reason == ""
    save_snapshot(spec, tmp_path / "here.png")
    assert np.array_equal(imread(drawn), imread(tmp_path / "here.png"))


def test_headless_preview_draws_in_its_child(tmp_path: Path) -> None:
    sink = HeadlessPreview(tmp_path, snapshot_every=2)
    for i in range(4):
        sink.on_restored(make_restored(i))
        sink.on_pair(make_pair(i))
    _wait_for(tmp_path / "preview_000004.png")
    child = sink._renderer._proc
    assert child is not None and child.pid != os.getpid()
    sink.close()
    assert child.poll() is not None  # the child ends with the preview
    assert sink._renderer.fallback_reason == ""
    assert len(list(tmp_path.glob("preview_*.png"))) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_renderer_loses_no_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = HeadlessPreview(tmp_path, snapshot_every=1)
    sink.on_restored(make_restored(0))
    sink.on_pair(make_pair(0))
    _wait_for(tmp_path / "preview_000001.png")
    pid = sink._renderer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with caplog.at_level(logging.WARNING):
        for i in (1, 2):
            sink.on_restored(make_restored(i))
            sink.on_pair(make_pair(i))
        sink.close()
    assert (tmp_path / "preview_000002.png").is_file()
    assert (tmp_path / "preview_000003.png").is_file()
    assert "ended" in sink._renderer.fallback_reason
    said = [r.message for r in caplog.records if "snapshot renderer" in r.message]
    assert len(said) == 1  # said once


def test_a_renderer_that_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render_process.sys, "executable", str(tmp_path / "no-python"))
    sink = HeadlessPreview(tmp_path, snapshot_every=1)
    sink.on_restored(make_restored(0))
    sink.on_pair(make_pair(0))
    sink.close()
    assert (tmp_path / "preview_000001.png").is_file()
    assert "could not start" in sink._renderer.fallback_reason


def test_the_childs_disk_error_stops_the_snapshots(tmp_path: Path) -> None:
    """An OSError while the child saves (here: the PNG's name is a folder) stops
    the snapshots with one reason, as in-process; the child itself goes on."""
    (tmp_path / "preview_000001.png").mkdir()
    sink = HeadlessPreview(tmp_path, snapshot_every=1)
    sink.on_restored(make_restored(0))
    sink.on_pair(make_pair(0))
    sink.close()
    assert "preview_000001.png" in sink.write_error
    assert sink._renderer.fallback_reason == ""


def test_snapshots_keep_a_minimum_interval(tmp_path: Path) -> None:
    """Every 2 pairs, but at most one per hour: the first due snapshot and the
    final one are written, not the ones between."""
    sink = HeadlessPreview(tmp_path, snapshot_every=2, min_interval_s=3600.0)
    for i in range(8):
        sink.on_restored(make_restored(i))
        sink.on_pair(make_pair(i))
    sink.close()
    names = sorted(p.name for p in tmp_path.glob("preview_*.png"))
    assert names == ["preview_000002.png", "preview_000008.png"]
