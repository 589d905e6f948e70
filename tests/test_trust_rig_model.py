"""The trust checks read each camera's photometry from the rig model, never a camera's
``Gain`` property (issue 21): declared where the rig file declares it, measured from
the frames (or a rough estimate) where it does not, said once; a run whose checks
cannot be made says so in one line and never crashes.  On Micro-Manager's C++
DemoCamera rig (real pixels, ``Gain`` 0, no photometry declared) and the demo rig."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import useq

import pairscope
from pairscope.acquire import PairedAcquisition
from pairscope.config import AcquisitionSettings
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.live import LiveOptions, bundled_model_path, run_live
from pairscope.restore import RestoredFrame, StreamingRestorer, load_model
from pairscope.trust import TrustMonitor, calibration_for_run

from ._cpp import assert_real_pixels
from ._pace import WAIT_S, Lockstep

CPP_RIG = Path(__file__).parents[1] / "hardware_configs" / "cpp_democamera_rig.yaml"
NOT_DECLARED = {"measured", "rough estimate"}
NO_PHOTOMETRY = "the rig model has no photometry for"


@pytest.fixture(autouse=True)
def _monitor_at_full_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor's priority is not under test here: at nice 19 beside CPU-bound
    processes its worker gets ~1 % of a core (a 12-pair check took over 300 s)."""
    import pairscope.trust._monitor

    monkeypatch.setattr(
        pairscope.trust._monitor, "deprioritize_current_thread", lambda *_a: None
    )


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records that carry a traceback or a division by zero."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.exc_info is not None
        or "Traceback" in r.getMessage()
        or "ZeroDivisionError" in r.getMessage()
    ]


def _unknown(run_dir: Path) -> list[str]:
    """The cameras whose photometry the run's rig model does not know: both on the
    C++ rig, unless 'pairscope calibrate-camera' stored a measurement beside it."""
    rig = json.loads((run_dir / "run.json").read_text())["rig_model"]
    return [
        rig[role]["label"]
        for role in ("lowdose", "reference")
        if rig[role]["photometry"]["source"] == "unknown"
    ]


def _said_once(messages: list[str], unknown: list[str]) -> None:
    """One warning naming every camera without photometry and the fix (none if
    the rig model knows both)."""
    said = [m for m in messages if NO_PHOTOMETRY in m]
    if not unknown:
        assert not said, said
        return
    assert len(said) == 1, said  # once, at the start
    assert all(f"{label!r}" in said[0] for label in unknown), said
    assert "calibrate-camera" in said[0] and "rig file" in said[0]  # the fix


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "quality_summary.json").read_text())


def _live(
    rig_path: Path, out: Path, loops: int, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A headless live run with the bundled x2 model, paced so that every pair is
    restored and trust-checked (a busy machine skips none)."""
    lockstep = Lockstep(monkeypatch)
    with open_rig(rig_path) as rig:
        assert rig.spec is not None
        summary = run_live(
            rig,
            rig.spec.pairing,
            useq.MDASequence(time_plan={"interval": 0, "loops": loops}),
            options=LiveOptions(out=out, headless=True, progress=False),
            on_started=lockstep,
        )
    lockstep.check()
    assert summary.status == "completed", summary.message
    assert summary.run_dir is not None
    return Path(summary.run_dir)


@pytest.fixture(scope="module")
def cpp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run on the C++ DemoCamera rig (shared, read-only)."""
    with open_rig(CPP_RIG) as rig:
        summary = PairedAcquisition(rig, AcquisitionSettings(mode="triggered")).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 12}),
            writer=RunWriter(tmp_path_factory.mktemp("cpp")),
        )
    assert summary.status == "completed", summary.message
    assert summary.run_dir is not None
    run = pairscope.open_run(summary.run_dir)
    assert_real_pixels(run, every=1)
    assert len(run.same_instant_pairs()) >= 4
    return Path(summary.run_dir)


@pytest.mark.timeout(1800)  # paced: 40 restored 512² frames on 2 busy cores
def test_a_live_run_on_the_cpp_rig_checks_its_pairs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DemoCamera says Gain 0 and the rig file declares no photometry: the checks
    run on measured or rough figures, say so once, and every pair is checked."""
    with caplog.at_level(logging.WARNING):
        run_dir = _live(CPP_RIG, tmp_path, 40, monkeypatch)
    assert_real_pixels(pairscope.open_run(run_dir))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["system_state"]["LowDoseCam"]["Gain"] == "0"
    s = _summary(run_dir)
    assert s["checked"] > 0 and s["errors"] == 0, s
    assert (
        s["checked"] + s["calibrating"] + s["skipped"] + s["unmatched"] == s["restored"]
    )
    for role in ("lowdose", "reference"):
        noise = s["calibration"][role]
        assert noise["photometry_source"] in NOT_DECLARED, noise
        assert noise["gain_e_per_adu"] > 0
    _said_once([r.getMessage() for r in caplog.records], _unknown(run_dir))
    assert not _problems(caplog)
    lines = (run_dir / "quality.jsonl").read_text().splitlines()
    assert len(lines) == s["checked"]


def test_the_demo_rig_uses_its_declared_photometry(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    demo_run: Path,
) -> None:
    with caplog.at_level(logging.WARNING):
        run_dir = _live(demo_rig_path(), tmp_path, 8, monkeypatch)
    s = _summary(run_dir)
    assert s["checked"] > 0 and s["errors"] == 0, s
    for role in ("lowdose", "reference"):
        noise = s["calibration"][role]
        assert noise["photometry_source"] == "declared", noise
        assert (noise["gain_e_per_adu"], noise["offset_adu"]) == (0.5, 100.0)
        assert noise["read_noise_e"] == 1.6
    assert "Rayleigh distance from the optics" in s["calibration"]["source"]
    assert not [r for r in caplog.records if NO_PHOTOMETRY in r.getMessage()]
    assert not _problems(caplog)
    offline = calibration_for_run(pairscope.open_run(demo_run))  # the same, offline
    assert offline.lowdose.photometry_source == "declared"
    assert offline.reference.photometry_source == "declared"


def test_evaluate_on_a_cpp_run_works(cpp_run: Path, tmp_path: Path) -> None:
    """``pairscope evaluate`` with the bundled demo model on a C++ run: exit 0, the
    model's warnings one line each, no traceback, the trust checks made."""
    run = tmp_path / "run"
    shutil.copytree(cpp_run, run)  # evaluate stores its registration in the run
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "evaluate",
         str(bundled_model_path(2)), str(run), "--out", str(out),
         "--max-pairs", "4", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "ZeroDivisionError" not in proc.stderr
    _said_once(proc.stderr.splitlines(), _unknown(run))
    assert "simulated demo specimen" in proc.stderr  # check_model_for_rig's warning
    report = json.loads((out / "evaluation.json").read_text())
    assert report["pairs"] == 4 and report["trust"]["checked"] == 4
    assert report["trust"]["errors"] == 0
    cal = report["calibration"][str(run)]
    assert {cal[r]["photometry_source"] for r in ("lowdose", "reference")} <= (
        NOT_DECLARED
    )
    assert report["two_point_table"]["rayleigh_um"] == pytest.approx(0.61 * 0.52 / 1.4)


def _legacy(cpp_run: Path, tmp_path: Path) -> Path:
    """``cpp_run`` as a run from before the rig model: no ``rig_model`` in run.json,
    its cameras reporting Gain 0."""
    run = tmp_path / "legacy"
    shutil.copytree(cpp_run, run)
    info = json.loads((run / "run.json").read_text())
    del info["rig_model"]
    for cam in ("LowDoseCam", "ReferenceCam"):
        assert info["system_state"][cam]["Gain"] == "0"
    (run / "run.json").write_text(json.dumps(info))
    return run


def _feed(monitor: TrustMonitor, run_dir: Path) -> int:
    """Hand every pair of the run and its restoration to ``monitor`` as a live run
    does, one at a time (each dealt with before the next); the pairs handed."""
    run = pairscope.open_run(run_dir)
    restorer = StreamingRestorer(load_model(bundled_model_path(2)), device="cpu")
    handed = 0
    for pair in run:
        if pair.lowdose is None:
            continue
        monitor.on_pair(pair)
        image = restorer.restore_now(pair.lowdose)
        monitor.on_restored(RestoredFrame(pair.index, image, 0.0, "demo_x2", ""))
        handed += 1
        deadline = time.monotonic() + WAIT_S  # fails only on a hang
        while True:
            s = monitor.summary()
            if s.checked + s.calibrating + s.errors + s.skipped + s.unmatched == handed:
                break
            assert time.monotonic() < deadline, f"pair {pair.index} not dealt with"
            time.sleep(0.005)
    return handed


def _quality_lines(folder: Path) -> list[str]:
    return (folder / "quality.jsonl").read_text().splitlines()


def test_a_legacy_run_with_gain_0_still_gets_checked(
    cpp_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = _legacy(cpp_run, tmp_path)
    with caplog.at_level(logging.WARNING):
        cal = calibration_for_run(pairscope.open_run(run_dir))  # offline
        monitor = TrustMonitor(tmp_path / "live", run_info=pairscope.open_run(
            run_dir).info)  # fmt: skip
        monitor.start()
        handed = _feed(monitor, run_dir)
        summary = monitor.finish()
    for noise in (cal.lowdose, cal.reference):
        assert noise.photometry_source in NOT_DECLARED and noise.gain_e_per_adu > 0
    assert summary.restored == handed == 12
    # the first 4 pairs of one instant register the cameras; they and every pair
    # that came while the calibration was made are checked once it is
    assert summary.checked == handed and summary.calibrating == 0
    assert summary.errors == 0
    checked = [ln["pair"] for ln in map(json.loads, _quality_lines(tmp_path / "live"))]
    assert checked == sorted(checked) and len(set(checked)) == handed
    s = _summary(tmp_path / "live")
    for role in ("lowdose", "reference"):
        assert s["calibration"][role]["photometry_source"] in NOT_DECLARED
    said = [r.getMessage() for r in caplog.records if NO_PHOTOMETRY in r.getMessage()]
    assert len(said) == 2  # once offline, once live
    assert not [r for r in caplog.records if "restored pairs checked" in r.getMessage()]
    assert not _problems(caplog)


def test_a_run_whose_checks_cannot_be_made_says_why_in_one_line(
    cpp_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run.json whose rig model this pairscope cannot read: every pair is handed,
    none can be checked; the calibration's failure is one line, the finish another
    with the counts and the reason, no traceback."""
    info = json.loads((cpp_run / "run.json").read_text())
    info["rig_model"]["version"] = 99
    with caplog.at_level(logging.WARNING):
        monitor = TrustMonitor(tmp_path / "a", run_info=info)
        monitor.start()
        handed = _feed(monitor, cpp_run)
        summary = monitor.finish()
        empty = TrustMonitor(tmp_path / "b").finish()  # no pair came
        unrestored = TrustMonitor(tmp_path / "c")  # pairs, none restored
        for pair in pairscope.open_run(cpp_run):
            unrestored.on_pair(pair)
        unrestored.finish()
    assert summary.checked == 0 and summary.restored == handed == 12
    assert summary.calibrating == handed and summary.calibration_failed >= 1
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if m.startswith("trust: calibration failed")]
    assert len(failed) == 1 and "version 99" in failed[0]
    ends = [m for m in messages if "restored pairs checked" in m]
    assert ends[0].startswith("trust: 0 of 12 restored pairs checked: ")
    assert "calibration failed" in ends[0] and "version 99" in ends[0]
    assert ends[1].startswith(
        "trust: 0 of 0 restored pairs checked: the restorer restored none of the 12 "
    )
    assert len(ends) == 2 and empty.checked == 0  # nothing came: nothing to say
    assert _summary(tmp_path / "a")["why"] == summary.why
    assert not _problems(caplog)


def test_a_legacy_demo_run_measures_both_cameras(
    demo_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a rig model the demo's noisy frames are measured, not guessed: the
    reference from its own frames, the low-dose camera against the reference (the
    simulated sensors are 0.5 e-/ADU, offset 100), said once."""
    run = tmp_path / "legacy"
    shutil.copytree(demo_run, run)
    info = json.loads((run / "run.json").read_text())
    del info["rig_model"]
    (run / "run.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING):
        cal = calibration_for_run(pairscope.open_run(run))
    for noise in (cal.lowdose, cal.reference):
        assert noise.photometry_source == "measured", noise
        assert noise.gain_e_per_adu == pytest.approx(0.5, rel=0.2)
        assert noise.offset_adu == pytest.approx(100.0, abs=5.0)
    assert "against the reference" in cal.lowdose.photometry_method
    said = [r.getMessage() for r in caplog.records if NO_PHOTOMETRY in r.getMessage()]
    assert len(said) == 1 and "measured" in said[0] and "rough" not in said[0]


def test_a_live_run_registers_its_cameras_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preview, the trust monitor and the run folder share one live camera
    registration (it was estimated twice per run): the real estimator, counted."""
    from pairscope.io import calibration as cal

    calls: list[int] = []
    real = cal.registration_from_pairs

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cal, "registration_from_pairs", counted)
    run_dir = _live(demo_rig_path(), tmp_path, 12, monkeypatch)
    s = _summary(run_dir)
    assert s["checked"] > 0, s
    stored = json.loads((run_dir / "calibration.json").read_text())["registration"]
    assert s["calibration"]["registration"] == stored
    assert len(calls) == 1, f"the cameras were registered {len(calls)} times"
