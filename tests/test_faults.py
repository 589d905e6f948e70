"""Bad input and faults: clear messages that name problem and fix, nothing lost."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import useq

import pairscope
from pairscope.acquire import PairedAcquisition
from pairscope.config import AcquisitionSettings
from pairscope.errors import ConfigError, PairingError, WriterError
from pairscope.hardware import find_detector_pair, open_core
from pairscope.io import RunWriter

from .conftest import DEMO_CFG

CLI = [sys.executable, "-m", "pairscope.cli"]


def _cfg_without(tmp_path: Path, *labels: str) -> Path:
    lines = [
        ln
        for ln in DEMO_CFG.read_text().splitlines()
        if not any(f",{lbl}," in ln for lbl in labels)
    ]
    path = tmp_path / "edited.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_config_names_the_file_and_the_demo(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError, match=r"not found.*the demo's is"),
        open_core(tmp_path / "nope.cfg"),
    ):
        pass


def test_malformed_config_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text(DEMO_CFG.read_text() + "#py Property,ReferenceCam,NoSuchProp,1\n")
    with (
        pytest.raises(ConfigError, match=r"line \d+.*NoSuchProp") as err,
        open_core(bad),
    ):
        pass
    assert "getDevicePropertyNames" in str(err.value)  # where to look them up


def test_one_camera_is_refused_unless_alternating(tmp_path: Path) -> None:
    cfg = _cfg_without(tmp_path, "ReferenceCam")
    with open_core(cfg) as core:
        with pytest.raises(PairingError, match=r"needs two cameras.*alternating"):
            find_detector_pair(core)
        pair = find_detector_pair(
            core, AcquisitionSettings(mode="alternating", binning=2)
        )
        assert pair.lowdose == pair.reference == "LowDoseCam" and pair.factor == 2


def test_pixel_sizes_must_give_an_integer_factor(demo_core) -> None:
    # the factor comes from the pixel sizes (0.2 µm binned vs 0.13 µm): 1.54
    demo_core.setProperty("ReferenceCam", "PixelSize_um", 0.13)
    with pytest.raises(PairingError, match=r"ratio 1\.538 is not an integer factor"):
        find_detector_pair(demo_core)
    # different sensor sizes are fine: the pair is the common field of view
    demo_core.setProperty("ReferenceCam", "PixelSize_um", 0.1)
    demo_core.setProperty("ReferenceCam", "SensorSize", 384)
    pair = find_detector_pair(demo_core)
    assert pair.factor == 2 and pair.lowdose_crop == (32, 32, 192, 192)


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(WriterError, match=r"Cannot create a run folder.*--out"):
        RunWriter(blocker / "runs")


def test_run_folders_are_never_reused(tmp_path: Path) -> None:
    a, b = RunWriter(tmp_path), RunWriter(tmp_path)
    assert a.run_dir != b.run_dir and a.run_dir.is_dir() and b.run_dir.is_dir()


def test_camera_failing_mid_run_keeps_every_earlier_pair(demo_core, tmp_path) -> None:
    demo_core.setProperty("ReferenceCam", "FailAfterFrames", 5)
    acq = PairedAcquisition(demo_core)
    errors: list[str] = []
    acq.events.error.connect(errors.append)
    summary = acq.run(
        useq.MDASequence(time_plan={"interval": 0, "loops": 20}),
        writer=RunWriter(tmp_path),
    )
    assert summary.status == "failed"
    assert summary.failed_trigger == 5
    assert "ReferenceCam" in summary.message and "trigger 5" in summary.message
    assert errors == [summary.message]
    run = pairscope.open_run(summary.run_dir)
    assert len(run) == 5
    assert all(p.reference is not None and p.reference.any() for p in run)
    assert run.info["status"] == "failed"


def _headless_demo(out: Path, *, frames: int) -> list[str]:
    """The CLI line of a headless demo run at 256² without restoration."""
    return [*CLI, "demo", "--frames", str(frames), "--sensor", "256", "--headless",
            "--no-restore", "--no-progress", "--out", str(out)]  # fmt: skip


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))


def test_full_disk_stops_the_run_and_keeps_what_was_written(tmp_path: Path) -> None:
    """A real OS write failure (file-size limit), in a real CLI process."""
    proc = subprocess.run(
        _headless_demo(tmp_path, frames=200),
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "The run was stopped" in proc.stderr and "--out" in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    run = pairscope.open_run(run_dir)
    assert 0 < len(run) < 200
    for pair in run:  # every listed pair is complete
        assert pair.lowdose.shape == (128, 128) and pair.reference.shape == (256, 256)


def test_kill_9_leaves_every_manifest_pair_readable(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _headless_demo(tmp_path, frames=100_000),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("*/pairs.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 30:
            manifest = found[0]
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert manifest is not None, "the run never wrote 30 pairs"
    run = pairscope.open_run(manifest.parent)
    assert len(run) >= 30 and run.damaged_lines <= 1
    for i, pair in enumerate(run):
        assert pair.index == i
        assert pair.lowdose.shape == (128, 128) and pair.lowdose.max() > 100
        assert pair.reference.shape == (256, 256) and pair.reference.max() > 100


def test_cli_demo_exits_cleanly_and_prints_the_run_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *CLI,
            "demo",
            "--frames",
            "5",
            "--sensor",
            "128",
            "--headless",
            "--no-restore",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Could not find a compatible Micro-Manager" not in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert len(pairscope.open_run(run_dir)) == 5


def test_cli_info_explains_a_refused_config(tmp_path: Path) -> None:
    cfg = _cfg_without(tmp_path, "ReferenceCam")
    proc = subprocess.run(
        [*CLI, "info", str(cfg)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "needs two cameras" in proc.stderr and "alternating" in proc.stderr


def test_a_stage_failing_mid_run_keeps_every_earlier_pair(demo_core, tmp_path) -> None:
    from pairscope.sim.devices import DemoXYStage

    calls = {"n": 0}
    original = DemoXYStage.set_position_um

    def failing(self, x: float, y: float) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("XY stage controller not responding")
        original(self, x, y)

    DemoXYStage.set_position_um = failing
    try:
        summary = PairedAcquisition(demo_core).run(
            useq.MDASequence(
                time_plan={"interval": 0, "loops": 4},
                stage_positions=[(0.0, 0.0, 0.0), (5.0, 5.0, 0.0)],
            ),
            writer=RunWriter(tmp_path),
        )
    finally:
        DemoXYStage.set_position_um = original
    assert summary.status == "failed" and summary.failed_trigger == 3
    assert "did not reach (5.0, 5.0)" in summary.message
    assert "earlier pair is saved" in summary.message.replace("Every", "every")
    assert len(pairscope.open_run(summary.run_dir)) == 3


def test_cpp_rig_without_micromanager_says_how_to_fix_it(tmp_path: Path) -> None:
    """No C++ adapters where pymmcore-plus looks (an empty folder): one clear line."""
    import os
    import subprocess
    import sys

    empty = tmp_path / "no-micromanager"
    empty.mkdir()
    rig = DEMO_CFG.parent / "cpp_democamera_rig.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "info", str(rig)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MICROMANAGER_PATH": str(empty)},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cpp_lowdose.cfg" in proc.stderr and "mmcore install" in proc.stderr
