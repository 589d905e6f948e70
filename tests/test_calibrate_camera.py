"""``pairscope calibrate-camera`` on Micro-Manager's C++ DemoCamera rig, real pixels.

What DemoCamera's Noise mode does (mmCoreAndDevices DeviceAdapters/DemoCamera,
``GenerateSyntheticImage`` → ``AddBackgroundAndNoise`` + ``AddSignal``): each pixel
is ``offset + N(0, ReadNoise/pcf) + N(photons/pcf, sqrt(photons)/pcf)`` ADU with
``photons = Photon Flux × exposure`` and ``pcf`` its ``Photon Conversion Factor``,
the offset 100 ADU at 16 bit, each sum truncated to an integer.  So its variance
grows by ``1/pcf`` ADU² per ADU of mean: **e⁻/ADU = pcf**, the offset **99.5 ADU**
(100, truncated), the read noise **ReadNoise (electrons)** (2.5 e⁻ by default).
The tests give the two cameras different factors (2.5 and 0.8), so a measurement
of the wrong camera, or of none, fails.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import useq
import yaml

import pairscope
from pairscope import cli
from pairscope.acquire import PairedAcquisition
from pairscope.commands.calibrate_camera import acquire_series, fit_series
from pairscope.config import AcquisitionSettings
from pairscope.hardware import Rig, open_rig
from pairscope.io import RunWriter
from pairscope.rig import PhotometryError, read_stored_photometry, rig_model_for_run

from ._readonly import read_only

CONFIGS = Path(__file__).parents[1] / "hardware_configs"
RIG_NAME = "cpp_democamera_rig.yaml"
#: each camera's Photon Conversion Factor, set in the copied configs: its e-/ADU
EXPECTED_E_PER_ADU = {"lowdose": 2.5, "reference": 0.8}
CAMERAS = {"lowdose": "LowDoseCam", "reference": "ReferenceCam"}
EXPECTED_OFFSET_ADU = 99.5  # DemoCamera's 100 ADU, truncated to integers
EXPECTED_READ_NOISE_E = 2.5  # its ReadNoise (electrons) default
GAIN_TOLERANCE = 0.03  # 4 levels of 65536+ pixel pairs: ~0.3 % scatter
EXPOSURES = ["5", "10", "20", "40"]


def _rig_copy(
    folder: Path, edit: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    """The C++ DemoCamera rig copied into ``folder``, each camera with its own
    Photon Conversion Factor; ``edit`` changes the rig file's data."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, cfg in (
        ("lowdose", "cpp_lowdose.cfg"),
        ("reference", "cpp_reference.cfg"),
    ):
        text = (CONFIGS / cfg).read_text()
        text += (
            f"\nProperty,{CAMERAS[role]},Photon Conversion Factor,"
            f"{EXPECTED_E_PER_ADU[role]}\n"
        )
        (folder / cfg).write_text(text)
    rig = folder / RIG_NAME
    shutil.copy(CONFIGS / RIG_NAME, rig)
    if edit is not None:
        data = yaml.safe_load(rig.read_text())
        edit(data)
        rig.write_text(yaml.safe_dump(data))
    return rig


def _saturating_flats(data: dict[str, Any]) -> None:
    for setting in data["camera_calibration"]["flat"]:
        if setting[1] == "Photon Flux":
            setting[2] = 5000  # 5000 photons/ms x 40 ms / 0.8 > 65535 ADU


def _dark_flats(data: dict[str, Any]) -> None:
    """The light stays off for the flats: they are dark frames (exposure 0)."""
    data["camera_calibration"]["flat"] = data["camera_calibration"]["dark"]


def _state(rig: Rig) -> list[Any]:
    """Every property of every device of every core, each core's camera, shutter
    and autoshutter."""
    out: list[Any] = []
    for rc in rig.cores:
        core = rc.core
        out.append(core.getSystemState().dict())  # type: ignore[attr-defined]
        out.append(core.getCameraDevice())
        out.append(core.getAutoShutter())
        shutter = core.getShutterDevice()
        out.append(core.getShutterOpen(shutter) if shutter else None)
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "calibrate-camera", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [
        line for line in stderr.splitlines() if line.startswith("pairscope: error:")
    ]
    assert len(errors) == 1, stderr
    return errors[0]


def test_measures_democamera_gain_and_later_runs_record_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig_file = _rig_copy(tmp_path / "rig")
    code = cli.main(
        ["calibrate-camera", str(rig_file), "--yes", "--exposures", *EXPOSURES]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    stored_path = rig_file.with_name("cpp_democamera_rig.photometry.json")
    assert out.strip() == str(stored_path)
    data = json.loads(stored_path.read_text())
    assert data["version"] == 1 and data["rig"] == RIG_NAME
    assert set(data["cameras"]) == {"lowdose", "reference"}
    for role, expected in EXPECTED_E_PER_ADU.items():
        cam = data["cameras"][role]
        assert cam["label"] == CAMERAS[role]
        assert cam["camera_model"] == "DemoCamera/DCam"
        assert cam["binning"] == (2 if role == "lowdose" else 1)
        p = cam["photometry"]
        assert p["source"] == "measured"
        assert p["e_per_adu"] == pytest.approx(expected, rel=GAIN_TOLERANCE), role
        assert p["offset_adu"] == pytest.approx(EXPECTED_OFFSET_ADU, abs=0.3), role
        assert p["read_noise_e"] == pytest.approx(EXPECTED_READ_NOISE_E, rel=0.1), role
        lines = [line for line in err.splitlines() if line.startswith(f"{role} camera")]
        assert len(lines) == 1 and "e-/ADU" in lines[0]
    assert stored_path.with_suffix(".png").stat().st_size > 10_000  # the PTC plot
    stored = read_stored_photometry(stored_path)
    assert stored is not None

    with open_rig(rig_file) as rig:
        summary = PairedAcquisition(rig, AcquisitionSettings(mode="triggered")).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 4}),
            writer=RunWriter(tmp_path / "runs"),
        )
    assert summary.status == "completed", summary.message
    info = json.loads((Path(summary.run_dir) / "run.json").read_text())
    model = info["rig_model"]
    for role in EXPECTED_E_PER_ADU:
        p = model[role]["photometry"]
        assert p["source"] == "measured"
        assert p["e_per_adu"] == stored.cameras[role].photometry.e_per_adu  # type: ignore[index]
        assert p["method"].startswith("pairscope calibrate-camera 20")
    assert not [m for m in model["missing"] if m["what"].endswith(" photometry")]
    run = pairscope.open_run(summary.run_dir)
    assert rig_model_for_run(run).lowdose.photometry.source == "measured"


def test_a_declared_photometry_wins_and_a_contradiction_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def declare(data: dict[str, Any]) -> None:  # the data sheet says 1.0, not 2.5
        data["cores"][0]["photometry"] = {"e_per_adu": 1.0, "offset_adu": 100}

    rig_file = _rig_copy(tmp_path / "rig", declare)
    code = cli.main(["calibrate-camera", str(rig_file), "--yes", "--role", "lowdose"])
    assert code == 0
    with open_rig(rig_file) as rig:
        summary = PairedAcquisition(rig, AcquisitionSettings(mode="triggered")).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 2}),
            writer=RunWriter(tmp_path / "runs"),
        )
    info = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert info["rig_model"]["lowdose"]["photometry"]["source"] == "declared"
    assert info["rig_model"]["lowdose"]["photometry"]["e_per_adu"] == 1.0
    assert info["rig_model"]["reference"]["photometry"]["source"] == "unknown"
    warned = [
        r.getMessage()
        for r in caplog.records
        if "declared photometry" in r.getMessage()
    ]
    assert len(warned) == 1 and warned[0].count("e-/ADU") == 2, warned  # both figures
    assert "(1 e-/ADU" in warned[0]


def test_the_rig_is_left_as_found(tmp_path: Path) -> None:
    rig_file = _rig_copy(tmp_path / "rig")
    with open_rig(rig_file) as rig:
        before = _state(rig)
        series = acquire_series(
            rig, ("lowdose", "reference"), [5, 10, 20], 2, show_progress=False
        )
        assert _state(rig) == before
    assert [len(s.flats) for s in series] == [3, 3]
    assert fit_series(series[1]).e_per_adu == pytest.approx(0.8, rel=GAIN_TOLERANCE)


def test_the_rig_is_left_as_found_when_stopped_halfway(tmp_path: Path) -> None:
    """No shutter and no dark settings: the user is asked to turn the light on
    after the dark series, and presses Ctrl-C instead."""
    rig_file = _rig_copy(tmp_path / "rig", lambda d: d.pop("camera_calibration"))
    cfg = rig_file.with_name("cpp_lowdose.cfg")
    lines = cfg.read_text().splitlines(keepends=True)
    cfg.write_text("".join(line for line in lines if "Shutter" not in line))
    asked: list[str] = []

    def confirm(message: str) -> None:
        asked.append(message)
        if len(asked) == 2:
            raise KeyboardInterrupt

    with open_rig(rig_file) as rig:
        before = _state(rig)
        with pytest.raises(KeyboardInterrupt):
            acquire_series(
                rig, ("lowdose", "reference"), [5, 10, 20], confirm=confirm,
                show_progress=False,
            )  # fmt: skip
        assert _state(rig) == before
    assert "turn the light off" in asked[0] and "Turn the light on" in asked[1]


def test_saturated_flats_are_one_line_and_leave_the_rig_as_found(
    tmp_path: Path,
) -> None:
    rig_file = _rig_copy(tmp_path / "rig", _saturating_flats)
    result = _cli(str(rig_file), "--yes", "--exposures", *EXPOSURES)
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert "flats at 40 ms are saturated" in line, line
    assert "lower the light or the exposure" in line
    assert not rig_file.with_name("cpp_democamera_rig.photometry.json").exists()
    with open_rig(rig_file) as rig:
        before = _state(rig)
        series = acquire_series(rig, ("reference",), [5, 10, 40], show_progress=False)
        assert _state(rig) == before
    with pytest.raises(PhotometryError, match="saturated"):
        fit_series(series[0])


def test_dark_only_flats_are_one_line(tmp_path: Path) -> None:
    rig_file = _rig_copy(tmp_path / "rig", _dark_flats)
    result = _cli(str(rig_file), "--yes")
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert "no brighter than the dark one (the light is off?)" in line, line
    assert not rig_file.with_name("cpp_democamera_rig.photometry.json").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--exposures", "5", "10"], "needs at least 3 different exposures"),
        (["--exposures", "5", "10", "20000"], "refuses a 20000 ms exposure"),
        (["--frames", "1"], "--frames must be at least 2"),
    ],
)
def test_bad_series_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    rig_file = _rig_copy(tmp_path / "rig")
    assert cli.main(["calibrate-camera", str(rig_file), "--yes", *args]) == 2
    line = _error_line(capsys.readouterr().err)
    assert says in line, line


def test_a_read_only_rig_folder_is_one_line_naming_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig_file = _rig_copy(tmp_path / "rig")
    with read_only(rig_file.parent):
        assert cli.main(["calibrate-camera", str(rig_file), "--yes"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "is not writable" in line and "--out FILE" in line, line
    out = tmp_path / "elsewhere.photometry.json"
    assert (
        cli.main(["calibrate-camera", str(rig_file), "--yes", "--out", str(out)]) == 0
    )
    assert read_stored_photometry(out) is not None


def test_a_damaged_stored_file_is_one_warning_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig_file = _rig_copy(tmp_path / "rig")
    stored = rig_file.with_name("cpp_democamera_rig.photometry.json")
    for text, says in (
        ("{not json", "cannot be read"),
        ('{"version": 2, "rig": "x", "cameras": {}}', "version 2"),
        ('{"version": 1, "rig": "x", "cameras": {"lowdose": {"label": 3}}}', "damaged"),
    ):
        stored.write_text(text)
        caplog.clear()
        assert read_stored_photometry(stored) is None
        assert len(caplog.records) == 1 and says in caplog.records[0].getMessage()


def test_without_yes_it_says_what_to_do_and_waits_for_enter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig_file = _rig_copy(tmp_path / "rig")
    stored = rig_file.with_name("cpp_democamera_rig.photometry.json")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no one at the keyboard
    assert cli.main(["calibrate-camera", str(rig_file)]) == 2
    out, err = capsys.readouterr()
    assert "pass --yes" in _error_line(err) and not out and not stored.exists()
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert cli.main(["calibrate-camera", str(rig_file), "--role", "reference"]) == 0
    out, err = capsys.readouterr()
    assert "uniform specimen" in err and "Press Enter" in err
    assert out.strip() == str(stored)  # stdout is the result's path only
    data = read_stored_photometry(stored)
    assert data is not None and set(data.cameras) == {"reference"}
