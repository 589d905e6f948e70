"""Paired acquisition on the real UniMMCore with the demo devices."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import useq

import pairscope
from pairscope.acquire import PairedAcquisition
from pairscope.config import AcquisitionSettings, PairingMode
from pairscope.hardware import open_rig
from pairscope.io import RunWriter
from pairscope.metrics import bin_image

from .conftest import DEMO_CFG, DEMO_RIG, acquire_demo_run


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(float) - a.mean()
    b = b.astype(float) - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_pair_frames_show_the_same_instant(tmp_path: Path) -> None:
    run_dir = acquire_demo_run(tmp_path, frames=6, sensor=256)
    run = pairscope.open_run(run_dir)
    same, shifted = [], []
    for k in range(len(run) - 1):
        low = run[k].lowdose
        same.append(_corr(low, bin_image(run[k].reference, 2)))
        shifted.append(_corr(low, bin_image(run[k + 1].reference, 2)))
        # both cameras report reading the same hub trigger
        rec = run.records[k]
        assert (
            rec["lowdose"]["camera_trigger_index"]
            == rec["reference"]["camera_trigger_index"]
        )
    assert min(same) > 0.6  # noise-limited: the low-dose frame is dim
    # one trigger apart, the specimen has moved: the correlation is measurably worse
    assert all(s - o > 0.05 for s, o in zip(same, shifted, strict=True)), (
        same,
        shifted,
    )


def test_counts_and_metadata_match_the_sequence(demo_core, tmp_path: Path) -> None:
    for cam in ("LowDoseCam", "ReferenceCam"):
        demo_core.setProperty(cam, "SensorSize", 128)
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": 3},
        stage_positions=[(0.0, 0.0, 0.0), (10.0, -5.0, 0.0)],
        z_plan={"range": 1.0, "step": 1.0},
    )
    acq = PairedAcquisition(demo_core, config_path=DEMO_CFG)
    summary = acq.run(sequence, writer=RunWriter(tmp_path))
    n_events = len(list(sequence.iter_events()))
    assert summary.status == "completed"
    assert summary.pairs == summary.expected_pairs == n_events == 3 * 2 * 2
    run = pairscope.open_run(summary.run_dir)
    assert len(run) == n_events
    events = list(sequence.iter_events())
    for k, (rec, event) in enumerate(zip(run.records, events, strict=True)):
        assert rec["trigger_index"] == k
        assert rec["event_index"] == dict(event.index)
        x, y, z = rec["stage_xyz_um"]
        assert (x, y) == pytest.approx((event.x_pos, event.y_pos))
        assert z == pytest.approx(event.z_pos)
        low, ref = rec["lowdose"], rec["reference"]
        assert (low["camera"], ref["camera"]) == ("LowDoseCam", "ReferenceCam")
        # one core snaps one camera after the other: host timing, no camera number
        assert (low["camera_image_number"], ref["camera_image_number"]) == (None, None)
        assert low["timing_source"] == ref["timing_source"] == "host"
        assert rec["mode"] == "sequential" and rec["simultaneous"] is False
        assert ref["exposure_window_ms"][0] >= low["exposure_window_ms"][1] - 1e-3
        assert (low["exposure_ms"], ref["exposure_ms"]) == (20.0, 50.0)
        assert (low["binning"], ref["binning"]) == (2, 1)
        assert (low["gain"], ref["gain"]) == (0.5, 0.5)
        assert (low["pixel_size_um"], ref["pixel_size_um"]) == pytest.approx((0.2, 0.1))
        assert rec["split_ratio"] == pytest.approx(0.9)
        assert rec["light_power"] == 100.0
        assert rec["exposure_overlap_ms"] == 0.0
    info = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert info["config_sha256"] and info["pairscope_version"] == pairscope.__version__
    assert info["sequence"]["time_plan"]["loops"] == 3
    assert info["status"] == "completed" and info["pairs_written"] == n_events


def _photons(frame: np.ndarray, gain: float = 0.5, offset: float = 100.0) -> float:
    """Total detected electrons of a frame, from ADU."""
    return float(((frame.astype(float) - offset) * gain).sum())


def _snap(core, label: str) -> np.ndarray:
    core.setCameraDevice(label)
    core.setShutterOpen("LED", True)
    core.snapImage()
    img = core.getImage()
    core.setShutterOpen("LED", False)
    return img


def test_dose_and_binning_scale_the_signal_as_physics_says(demo_core) -> None:
    core = demo_core
    core.setAutoShutter(False)
    core.setProperty("DemoHub", "SpecimenSecondsPerTrigger", 0.0)  # frozen specimen
    base = _photons(_snap(core, "LowDoseCam"))
    core.setExposure("LowDoseCam", 40.0)
    assert _photons(_snap(core, "LowDoseCam")) / base == pytest.approx(2.0, rel=0.03)
    core.setProperty("LED", "Power_percent", 25)
    assert _photons(_snap(core, "LowDoseCam")) / base == pytest.approx(0.5, rel=0.03)
    core.setProperty("LED", "Power_percent", 100)
    core.setExposure("LowDoseCam", 20.0)
    # binning sums charge: 4x4 pixels hold 4x the signal of 2x2, the total is kept
    bin2 = _snap(core, "LowDoseCam")
    core.setProperty("LowDoseCam", "Binning", 4)
    bin4 = _snap(core, "LowDoseCam")
    assert bin4.shape == (128, 128) and bin2.shape == (256, 256)
    assert _photons(bin4) / _photons(bin2) == pytest.approx(1.0, rel=0.03)
    # each 4x4 pixel holds what the four 2x2 pixels over the same area hold (a
    # camera that averaged would give a quarter): pixel by pixel, up to the noise
    four = (bin4.astype(float) - 100).ravel()
    two = (bin2.astype(float) - 100).reshape(128, 2, 128, 2).sum((1, 3)).ravel()
    assert np.corrcoef(four, two)[0, 1] > 0.9
    assert (four @ two) / (two @ two) == pytest.approx(1.0, rel=0.05)
    # the 90:10 splitter and the exposures set the reference/low-dose ratio
    ref = _photons(_snap(core, "ReferenceCam"))
    assert ref / _photons(bin4) == pytest.approx((0.9 * 50) / (0.1 * 20), rel=0.03)
    # light off: only offset and read noise
    core.setProperty("LED", "Power_percent", 0)
    dark = _snap(core, "ReferenceCam").astype(float)
    assert dark.mean() == pytest.approx(100.0, abs=0.5)
    assert dark.std() == pytest.approx(1.6 / 0.5, rel=0.1)


def test_defocus_blurs_and_keeps_the_photons(demo_core) -> None:
    core = demo_core
    core.setAutoShutter(False)
    core.setProperty("DemoHub", "SpecimenSecondsPerTrigger", 0.0)
    core.setProperty("ReferenceCam", "ReadNoise_e", 0.0)
    focused = _snap(core, "ReferenceCam").astype(float) - 100
    core.setPosition("Z", 2.0)
    blurred = _snap(core, "ReferenceCam").astype(float) - 100
    # same photons (up to light spread beyond the field edge), lower peaks
    assert blurred.sum() / focused.sum() == pytest.approx(1.0, rel=0.05)
    assert np.percentile(blurred, 99.9) < 0.6 * np.percentile(focused, 99.9)


def test_specimen_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = pairscope.open_run(acquire_demo_run(tmp_path / "a", frames=2, seed=3))
    b = pairscope.open_run(acquire_demo_run(tmp_path / "b", frames=2, seed=3))
    c = pairscope.open_run(acquire_demo_run(tmp_path / "c", frames=2, seed=4))
    np.testing.assert_array_equal(a[1].reference, b[1].reference)
    np.testing.assert_array_equal(a[1].lowdose, b[1].lowdose)
    assert not np.array_equal(a[1].reference, c[1].reference)


def test_alternating_mode_pairs_one_camera(demo_core, tmp_path: Path) -> None:
    demo_core.setProperty("ReferenceCam", "SensorSize", 128)
    settings = AcquisitionSettings(
        mode=PairingMode.ALTERNATING,
        lowdose_camera="ReferenceCam",
        binning=2,
        lowdose_exposure_ms=10,
        reference_exposure_ms=50,
    )
    acq = PairedAcquisition(demo_core, settings)
    summary = acq.run(
        useq.MDASequence(time_plan={"interval": 0, "loops": 4}),
        writer=RunWriter(tmp_path),
    )
    assert summary.status == "completed" and summary.pairs == 4
    run = pairscope.open_run(summary.run_dir)
    for rec, pair in zip(run.records, run, strict=True):
        assert pair.lowdose.shape == (64, 64) and pair.reference.shape == (128, 128)
        assert (
            rec["lowdose"]["exposure_ms"] == 10
            and rec["reference"]["exposure_ms"] == 50
        )
        assert rec["simultaneous"] is False  # consecutive, not simultaneous
        assert rec["exposure_overlap_ms"] == 0.0
        assert (
            rec["reference"]["camera_trigger_index"]
            == rec["lowdose"]["camera_trigger_index"] + 1
        )


def test_sparse_reference_keeps_every_lowdose_frame(tmp_path: Path) -> None:
    settings = AcquisitionSettings(mode=PairingMode.SPARSE, reference_every=3)
    run = pairscope.open_run(acquire_demo_run(tmp_path, frames=7, settings=settings))
    assert len(run) == 7
    assert run.with_reference() == [0, 3, 6]
    assert run[1].reference is None and run[1].lowdose.shape == (128, 128)


def test_cancel_stops_cleanly_and_keeps_pairs(demo_core, tmp_path: Path) -> None:
    acq = PairedAcquisition(demo_core)
    got = []
    acq.events.pairReady.connect(got.append)
    thread, result = acq.run_in_thread(
        useq.MDASequence(time_plan={"interval": 0.05, "loops": 1000}),
        writer=RunWriter(tmp_path),
    )
    deadline = time.monotonic() + 20
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    acq.cancel()
    thread.join(20)
    summary = result[0]
    assert summary.status == "cancelled"
    assert 5 <= summary.pairs < 1000
    assert len(pairscope.open_run(summary.run_dir)) == summary.pairs


def test_pause_holds_the_run_and_resume_finishes_it(demo_core, tmp_path: Path) -> None:
    acq = PairedAcquisition(demo_core)
    got = []
    acq.events.pairReady.connect(got.append)
    thread, result = acq.run_in_thread(
        # an interval the 50 ms exposures can keep (a shorter one is refused)
        useq.MDASequence(time_plan={"interval": 0.05, "loops": 40}),
        writer=RunWriter(tmp_path),
    )
    deadline = time.monotonic() + 60  # a bound for a hang only
    while len(got) < 3 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    acq.set_paused(True)
    time.sleep(0.3)
    held = len(got)
    time.sleep(0.5)
    assert len(got) <= held + 1  # at most the pair in flight lands while paused
    acq.set_paused(False)
    thread.join(30)
    assert result[0].status == "completed" and result[0].pairs == 40


def test_cli_acquire_runs_a_sequence_file_on_any_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps({"time_plan": {"interval": 0, "loops": 3}}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairscope.cli",
            "acquire",
            str(DEMO_CFG),
            "--sequence",
            str(seq),
            "--mode",
            "sparse",
            "--reference-every",
            "2",
            "--headless",
            "--no-restore",
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    run = pairscope.open_run(proc.stdout.strip().splitlines()[-1])
    assert len(run) == 3 and run.with_reference() == [0, 2]


def test_ctrl_c_on_the_python_api_stops_cleanly_and_keeps_every_pair(
    tmp_path: Path,
) -> None:
    """Ctrl-C during ``PairedAcquisition.run`` (main thread, no CLI): the run is
    cancelled after the current frame, every pair is written, and the core can
    run again (pymmcore-plus's runner is not left 'running')."""
    import signal

    # a shell that starts pytest in the background (`cmd &`, nohup) hands it
    # SIGINT ignored, and an ignored Ctrl-C is left ignored: give Python its own
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_during_a_run(tmp_path)
    finally:
        signal.signal(signal.SIGINT, ignored)


def _ctrl_c_during_a_run(tmp_path: Path) -> None:
    import signal
    import threading

    with open_rig(DEMO_RIG) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 64)
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)
        listed = threading.Event()
        seen: list[int] = []
        handler: list[object] = []

        def count(pair: object) -> None:
            seen.append(1)
            if len(seen) == 5:
                handler.append(signal.getsignal(signal.SIGINT))
                listed.set()

        def ctrl_c() -> None:  # as a terminal's Ctrl-C: to the main thread
            if listed.wait(120):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        acq.events.pairReady.connect(count)
        threading.Thread(target=ctrl_c, daemon=True).start()
        summary = acq.run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 400}),
            writer=RunWriter(tmp_path),
        )
        acq.events.pairReady.disconnect(count)
        again = acq.run(useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    why = f"{len(seen)} pairs seen; SIGINT handler during the run: {handler}"
    assert summary.status == "cancelled" and 5 <= summary.pairs < 400, why
    assert len(pairscope.open_run(summary.run_dir)) == summary.pairs
    assert again.status == "completed" and again.pairs == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_cancel_before_the_run_starts_acquires_nothing_and_says_cancelled(
    demo_core, tmp_path: Path
) -> None:
    """A Ctrl-C while the rig is being set up (before :meth:`run`) is not lost:
    the run is recorded 'cancelled' with no pair, and the next run is not."""
    acq = PairedAcquisition(demo_core)
    acq.cancel()
    summary = acq.run(
        useq.MDASequence(time_plan={"interval": 0.05, "loops": 200}),
        writer=RunWriter(tmp_path),
    )
    assert summary.status == "cancelled" and summary.pairs == 0
    info = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert info["status"] == "cancelled"
    again = acq.run(useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    assert again.status == "completed" and again.pairs == 2
    acq.cancel()  # between two runs of one acquisition: for the next one
    third = acq.run(useq.MDASequence(time_plan={"interval": 0.05, "loops": 200}))
    assert third.status == "cancelled" and third.pairs == 0
