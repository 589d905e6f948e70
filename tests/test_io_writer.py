"""The run writer fails safe: any error stops it cleanly, nothing listed is lost."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import pairscope
from pairscope.errors import WriterError
from pairscope.io import RunWriter

from ._io_pairs import RUN_INFO, make_pair

WAIT_S = 60.0  # generous: fails only on a hang


def _wait_written(writer: RunWriter, n: int, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while writer.pairs_written < n:
        assert time.monotonic() < deadline, "writer did not write in time"
        time.sleep(0.01)


def _assert_listed_pairs_readable(run_dir: Path, n: int | None = None) -> None:
    run = pairscope.open_run(run_dir)
    if n is not None:
        assert len(run) == n
    for p in run:
        if p.lowdose is not None:
            assert p.lowdose[0, 0] == p.index  # the frame of this pair, not another
        if p.reference is not None:
            assert p.reference[0, 0] == p.index
    run.close()
    assert not list(run_dir.glob("*.tmp"))


def _submit_until_refused(writer: RunWriter, start: int) -> int:
    """Submit pairs until the writer refuses one (a full queue makes each submit
    wait for the writing thread); returns the index of the refused pair."""
    deadline = time.monotonic() + WAIT_S
    k = start
    while True:
        try:
            writer.submit(make_pair(k))
        except WriterError:
            return k
        assert time.monotonic() < deadline, "the writer never refused a pair"
        k += 1
        time.sleep(0.005)


class _RaisingPair:
    index, lowdose, reference = 3, None, None

    def __init__(self, k: int) -> None:
        self.index = k

    @property
    def metadata(self) -> dict[str, Any]:
        raise RuntimeError("boom")


def test_a_frame_that_is_not_2d_is_refused_and_earlier_pairs_listed(tmp_path) -> None:
    writer = RunWriter(tmp_path, commit_interval_s=0.5)  # all in one group commit
    writer.start(RUN_INFO)
    writer.submit(make_pair(0))
    bad = make_pair(1)
    object.__setattr__(bad, "lowdose", np.zeros((2, 4, 4), np.uint16))
    writer.submit(bad)
    with pytest.raises(
        WriterError, match=r"shape \(2, 4, 4\).*writes 2-D.*the 1 pairs"
    ):
        writer.close()
    _assert_listed_pairs_readable(writer.run_dir, 1)


def test_a_non_os_error_stops_the_writer_and_submit_raises_at_once(tmp_path) -> None:
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(3):
        writer.submit(make_pair(k))
    _wait_written(writer, 3)
    writer.submit(_RaisingPair(3))  # a bug, not a disk problem
    deadline = time.monotonic() + WAIT_S
    while writer.error is None:  # the writing thread meets it
        assert time.monotonic() < deadline, "the writer never failed"
        time.sleep(0.01)
    with pytest.raises(WriterError):  # from then on every submit is refused at once
        writer.submit(make_pair(4))
    with pytest.raises(WriterError, match=r"unexpected error.*RuntimeError.*3 pairs"):
        writer.close({"status": "completed"})
    info = json.loads((writer.run_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["pairs_written"] == 3
    assert "RuntimeError: boom" in info["writer_error"]
    _assert_listed_pairs_readable(writer.run_dir, 3)
    assert not (writer.run_dir / "writing.lock").exists()


class _BlockingPair:
    """A pair whose metadata blocks the writing thread until released."""

    def __init__(self, k: int, release: threading.Event) -> None:
        self._pair, self._release = make_pair(k), release
        self.index, self.lowdose, self.reference = k, self._pair.lowdose, None
        self.taken = threading.Event()  # the writing thread is in it

    @property
    def metadata(self) -> dict[str, Any]:
        self.taken.set()
        self._release.wait(WAIT_S)
        return {"lowdose": dict(self._pair.metadata["lowdose"])}


def test_cancel_frees_a_submit_blocked_on_a_full_queue(tmp_path) -> None:
    release = threading.Event()
    writer = RunWriter(tmp_path, queue_size=1, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    blocking = _BlockingPair(0, release)
    writer.submit(blocking)
    assert blocking.taken.wait(WAIT_S)  # the thread now blocks in it
    writer.submit(make_pair(1))  # fills the queue
    outcome: list[object] = []

    def blocked() -> None:
        try:
            writer.submit(make_pair(2))
            outcome.append("accepted")
        except WriterError as err:
            outcome.append(err)

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.3)
    assert not outcome  # really blocked (back-pressure)
    writer.cancel()
    thread.join(WAIT_S)
    assert outcome and isinstance(outcome[0], WriterError)
    release.set()
    assert writer.close({"status": "cancelled"}) == 2  # queued pairs were kept
    info = json.loads((writer.run_dir / "run.json").read_text())
    assert info["status"] == "cancelled" and info["pairs_written"] == 2
    _assert_listed_pairs_readable(writer.run_dir, 2)


def test_file_size_limit_is_one_clear_error_and_no_tmp_files(tmp_path) -> None:
    """A real EFBIG (RLIMIT_FSIZE) in a real writer process."""
    script = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000));"
        "from tests._io_pairs import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "the file size limit was reached" in proc.stderr
    run_dir = Path(proc.stdout.splitlines()[0])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["pairs_written"] > 0
    _assert_listed_pairs_readable(run_dir, info["pairs_written"])
    # the OME-XML is there, or run.json says which file has no room for it
    for name in ("lowdose.ome.tif", "reference.ome.tif"):
        with tifffile.TiffFile(run_dir / name) as tif:
            assert tif.is_ome != (name in info.get("ome_metadata_missing", {}))
    from pairscope.io._repair import repair_run

    repair_run(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "ome_metadata_missing" not in info
    for name in ("lowdose.ome.tif", "reference.ome.tif"):
        with tifffile.TiffFile(run_dir / name) as tif:
            assert tif.is_ome and len(tif.pages) == info["pairs_written"]


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
    )
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_on_a_tiny_tmpfs_still_finalises(tmp_path) -> None:
    with _tmpfs(tmp_path / "small", "1500k") as disk:
        writer = RunWriter(disk, commit_interval_s=0.01, reserve_bytes=256 << 10)
        writer.start(RUN_INFO)
        _submit_until_refused(writer, 0)
        with pytest.raises(WriterError, match="the disk is full") as err:
            writer.close({"status": "completed"})
        info = json.loads((writer.run_dir / "run.json").read_text())
        assert info["status"] == "failed"
        assert info["pairs_written"] == err.value.pairs_written > 0
        _assert_listed_pairs_readable(writer.run_dir, info["pairs_written"])
        assert not (writer.run_dir / ".space-reserve").exists()


def test_full_disk_in_ome_zarr_is_the_same_one_line(tmp_path) -> None:
    """tensorstore reports a full disk as ValueError RESOURCE_EXHAUSTED: the
    writer words it as every full disk, and every listed pair reads back."""
    with _tmpfs(tmp_path / "small", "1500k") as disk:
        writer = RunWriter(
            disk, commit_interval_s=0.01, reserve_bytes=256 << 10, format="ome-zarr"
        )
        writer.start(RUN_INFO)
        deadline = time.monotonic() + WAIT_S
        with pytest.raises(WriterError):  # 256² frames: a chunk fills the disk first
            for k in range(10_000):
                writer.submit(make_pair(k, size=256))
                assert time.monotonic() < deadline, "the writer never refused a pair"
                time.sleep(0.005)
        with pytest.raises(WriterError) as err:
            writer.close({"status": "completed"})
        assert "the disk is full" in str(err.value), err.value
        assert "RESOURCE_EXHAUSTED" not in str(err.value)
        info = json.loads((writer.run_dir / "run.json").read_text())
        assert info["status"] == "failed"
        assert info["pairs_written"] == err.value.pairs_written > 0
        _assert_listed_pairs_readable(writer.run_dir, info["pairs_written"])


def test_folder_turned_read_only_mid_run(tmp_path) -> None:
    """chattr +i: nothing new can be created in the folder (root ignores chmod)."""
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(5):
        writer.submit(make_pair(k))
    _wait_written(writer, 5)
    if subprocess.run(["chattr", "+i", str(writer.run_dir)]).returncode != 0:
        writer.close()
        pytest.skip("chattr +i is not available here")
    try:
        for k in range(5, 8):  # open files still take frames
            writer.submit(make_pair(k))
        with pytest.raises(WriterError, match=r"Finalising.*pairscope repair"):
            writer.close({"status": "completed"})
        _assert_listed_pairs_readable(writer.run_dir, 8)
    finally:
        subprocess.run(["chattr", "-i", str(writer.run_dir)], check=True)
    from pairscope.io._repair import repair_run

    report = repair_run(writer.run_dir)
    assert report.status == "recovered" and report.finalize.pairs == 8


def test_folder_moved_mid_run_is_noticed(tmp_path) -> None:
    writer = RunWriter(tmp_path / "runs", commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(4):
        writer.submit(make_pair(k))
    _wait_written(writer, 4)
    moved = tmp_path / "moved"
    writer.run_dir.rename(moved)
    _submit_until_refused(writer, 4)
    with pytest.raises(WriterError, match="removed or moved"):
        writer.close({"status": "completed"})
    _assert_listed_pairs_readable(moved, 4)


def test_failed_start_leaves_no_empty_run_folder(tmp_path) -> None:
    writer = RunWriter(tmp_path)
    writer.start(RUN_INFO)
    assert writer.discard_if_empty()
    assert list(tmp_path.iterdir()) == []
    kept = RunWriter(tmp_path, commit_interval_s=0.01)
    kept.start(RUN_INFO)
    kept.submit(make_pair(0))
    _wait_written(kept, 1)
    assert not kept.discard_if_empty()
    kept.close()


def test_shape_change_mid_run_becomes_a_new_image(tmp_path) -> None:
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(6):  # binning 2 -> 4 halfway: the low-dose frames shrink
        writer.submit(make_pair(k, binning=2 if k < 3 else 4))
    assert writer.close() == 6
    with tifffile.TiffFile(writer.run_dir / "lowdose.ome.tif") as tif:
        shapes = [s.shape for s in tif.series if "lowdose" in s.name]
        assert shapes == [(3, 16, 16), (3, 8, 8)]
        assert all(s.asarray().shape == s.shape for s in tif.series)
    _assert_listed_pairs_readable(writer.run_dir, 6)


def test_reference_only_pair_is_written_and_skipped_by_complete_lists(tmp_path) -> None:
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    writer.submit(make_pair(0))
    writer.submit(make_pair(1, lowdose=False))
    writer.submit(make_pair(2, reference=False))
    assert writer.close() == 3
    run = pairscope.open_run(writer.run_dir)
    lines = [
        json.loads(x) for x in (writer.run_dir / "pairs.jsonl").read_text().splitlines()
    ]
    assert lines[1]["lowdose"] is None and lines[1]["reference"]["page"] == 1
    assert lines[1]["partner_missing"] == "lowdose"
    assert lines[0]["lowdose"]["exposure_window_ms"] == [0.0, 20.0]  # passed through
    assert run[1].lowdose is None and run[1].reference is not None
    assert run.with_reference() == [0] and run.with_lowdose() == [0, 2]
    _assert_listed_pairs_readable(writer.run_dir, 3)
