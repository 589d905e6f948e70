"""What the restorer emits is a restored frame, and what listens to it cannot break
it: an output of the wrong size or with NaN pixels is an error (counted, never
emitted), a listener that raises is logged once and disconnected, and preview or
trust files that cannot be written any more cost one warning, no traceback.

Real restorers (the bundled demo model), real frames, real folders.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from pairscope._signals import MAX_FAILURES
from pairscope.errors import RestorationError
from pairscope.live import bundled_model_path
from pairscope.preview import HeadlessPreview
from pairscope.restore import (
    ModelInfo,
    RestoredFrame,
    StreamingRestorer,
    UNet,
    load_model,
    loaded_from_network,
)
from pairscope.trust import TrustMonitor

from ._io_pairs import make_pair
from ._readonly import read_only

WAIT_S = 60  # generous: fails only on a hang


class _Frames:
    """The restorer's ``restored`` and ``error`` events, waited on one by one."""

    def __init__(self, restorer: StreamingRestorer) -> None:
        self.restored: list[RestoredFrame] = []
        self.errors: list[str] = []
        self._event = threading.Event()
        restorer.events.restored.connect(self._on_restored)
        restorer.events.error.connect(self._on_error)

    def _on_restored(self, frame: RestoredFrame) -> None:
        self.restored.append(frame)
        self._event.set()

    def _on_error(self, message: str) -> None:
        self.errors.append(message)
        self._event.set()

    def submit_and_wait(self, restorer: StreamingRestorer, k: int, frame: np.ndarray):
        self._event.clear()
        restorer.submit(k, frame)
        assert self._event.wait(WAIT_S), "the restorer never answered"


def _low(k: int) -> np.ndarray:
    pair = make_pair(k, size=64)
    assert pair.lowdose is not None
    return pair.lowdose.astype(np.float32)


class _CroppingNet(UNet):
    """A network whose output is 7x5 whatever the frame (a broken restorer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., :5, :7]


def _cropping() -> StreamingRestorer:
    net = _CroppingNet(factor=2, width=4, depth=1)
    return StreamingRestorer(
        loaded_from_network(net, ModelInfo.for_network(net, name="cropping")),
        num_threads=0,
    )


def _with_nan(k: int) -> np.ndarray:
    frame = _low(k)
    frame[4, 5] = np.nan
    return frame


CASES = {
    "NaN output": (
        lambda: StreamingRestorer(load_model(bundled_model_path(2)), num_threads=0),
        _with_nan,
        "the 32x32 low-dose frame holds 1 NaN or infinite pixel(s)",
    ),
    "7x5 output": (
        _cropping,
        _low,
        "the model returned a 7x5 image for a 32x32 frame; a x2 restorer must "
        "return 64x64",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_an_output_that_is_no_restored_frame_is_an_error_never_emitted(
    case: str,
) -> None:
    make, frame_of, words = CASES[case]
    restorer = make()
    with pytest.raises(RestorationError, match=re.escape(words)):
        restorer.restore_now(frame_of(0))
    frames = _Frames(restorer)
    with restorer:
        for k in range(3):
            frames.submit_and_wait(restorer, k, frame_of(k))
    assert frames.restored == []
    assert len(frames.errors) == 3 and all(words in m for m in frames.errors)
    stats = restorer.stats()
    assert (stats.errors, stats.restored) == (3, 0)


def test_a_good_frame_after_a_bad_one_is_restored() -> None:
    restorer = StreamingRestorer(load_model(bundled_model_path(2)), num_threads=0)
    frames = _Frames(restorer)
    with restorer:
        frames.submit_and_wait(restorer, 0, _with_nan(0))
        frames.submit_and_wait(restorer, 1, _low(1))
    assert [f.index for f in frames.restored] == [1]
    assert frames.restored[0].image.shape == (64, 64)
    assert np.isfinite(frames.restored[0].image).all()


def test_a_raising_listener_is_logged_once_and_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    restorer = StreamingRestorer(load_model(bundled_model_path(2)), num_threads=0)
    calls: list[int] = []

    def broken(frame: RestoredFrame) -> None:
        calls.append(frame.index)
        raise ValueError("a listener's own bug")

    restorer.events.restored.connect(broken)  # first: it must not stop the others
    frames = _Frames(restorer)
    with caplog.at_level(logging.WARNING), restorer:
        for k in range(6):
            frames.submit_and_wait(restorer, k, _low(k))
    assert [f.index for f in frames.restored] == list(range(6))
    assert calls == list(range(MAX_FAILURES))  # then disconnected
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "broken" in tracebacks[0].getMessage()
    said = [r.getMessage() for r in caplog.records]
    assert sum(f"failed {MAX_FAILURES} times: disconnected" in m for m in said) == 1
    assert restorer.stats().restored == 6


# -- preview snapshots and the trust summary after the folder went away ------------
def _feed(preview: HeadlessPreview) -> None:
    """Three pairs: a snapshot after the second, a last one when closed."""
    for k in range(3):
        preview.on_pair(make_pair(k, size=64))


def _one_warning(caplog: pytest.LogCaptureFixture, logger: str) -> str:
    records = [r for r in caplog.records if r.name == logger]
    assert [r.levelno for r in records] == [logging.WARNING], records
    assert not any(r.exc_info for r in caplog.records)  # no traceback anywhere
    return records[0].getMessage()


def test_preview_snapshots_stop_with_one_warning_when_the_folder_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "run" / "preview"
    preview = HeadlessPreview(folder, snapshot_every=2)
    shutil.rmtree(tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        _feed(preview)
        written = preview.close()
    said = _one_warning(caplog, "pairscope.preview._headless")
    assert "cannot write" in said and "the folder was removed or moved" in said
    assert not any(p.suffix == ".png" for p in written)
    assert not (tmp_path / "run").exists()  # never recreated


def test_preview_on_a_read_only_folder_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "preview"
    folder.mkdir()
    with read_only(folder), caplog.at_level(logging.WARNING):
        preview = HeadlessPreview(folder, snapshot_every=2)
        _feed(preview)
        preview.close()
    said = _one_warning(caplog, "pairscope.preview._headless")
    assert "cannot write" in said and "read-only" in said
    assert preview.write_error
    assert list(folder.iterdir()) == []


def test_trust_summary_of_a_removed_run_folder_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    monitor = TrustMonitor(run)
    monitor.start()
    shutil.rmtree(run)
    with caplog.at_level(logging.WARNING):
        summary = monitor.finish()
    said = _one_warning(caplog, "pairscope.trust._monitor")
    assert "cannot write" in said and summary.files == []
    assert not run.exists()  # the summary and plot did not recreate it
