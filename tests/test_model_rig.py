"""A model meets a rig: model files record the rig model of their training runs,
and one check (``check_model_for_rig``) refuses another factor or pixel size and
warns, with both figures, on other photometry, another camera, a rig-less model and
the bundled demo model on a camera other than the simulated one."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import useq

from pairscope.acquire import PairedAcquisition
from pairscope.cli import main
from pairscope.config import AcquisitionSettings
from pairscope.finetune import LiveFineTuner
from pairscope.hardware import open_rig
from pairscope.io import RunWriter
from pairscope.io.calibration import Registration, save_calibration
from pairscope.live import LiveOptions, bundled_model_path, run_live
from pairscope.restore import (
    FORMAT_VERSION,
    ModelInfo,
    RigMismatchError,
    check_model_for_rig,
    load_model,
    save_model,
)
from pairscope.rig import Photometry, RigModel, rig_model_for_run, rig_model_from_info
from pairscope.train import TrainConfig, train

ROOT = Path(__file__).parents[1]
CPP_RIG = ROOT / "hardware_configs" / "cpp_democamera_rig.yaml"
CLI = [sys.executable, "-m", "pairscope.cli"]
DEMO_SENTENCE = (
    "the bundled model was trained on pairscope's simulated demo specimen and "
    "camera; on DemoCamera/DCam its output is a guess until fine-tuned (--fine-tune) "
    "or retrained on this rig's pairs (pairscope train RUN)"
)
TINY = TrainConfig(
    width=4, depth=1, crop=64, batch_size=4, samples_per_epoch=8, block_size=2,
    epochs=1, progress=False, noise_fit=False, synthetic_fraction=0.0,
    sequential_pairs=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared demo run, calibrated, with its cameras' Gain property set to 7
    (the rig file declares 0.5 e-/ADU: the model must record 0.5, never 7)."""
    path = Path(shutil.copytree(demo_run, tmp_path_factory.mktemp("rig") / "run"))
    save_calibration(path, Registration(-0.7, 1.3))
    info = json.loads((path / "run.json").read_text())
    for cam in ("LowDoseCam", "ReferenceCam"):
        info["system_state"][cam]["Gain"] = "7"
    (path / "run.json").write_text(json.dumps(info))
    return path


@pytest.fixture(scope="module")
def cpp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run on Micro-Manager's C++ DemoCamera (×2, 0.2 µm, photometry
    unknown)."""
    with open_rig(CPP_RIG) as rig:
        summary = PairedAcquisition(rig, AcquisitionSettings(mode="triggered")).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 3}),
            writer=RunWriter(tmp_path_factory.mktemp("cpp")),
        )
    assert summary.status == "completed", summary.message
    return Path(summary.run_dir)


def _variant(path: Path, **changes: object) -> Path:
    """The bundled ×2 model (weights unchanged) with ``changes`` to its metadata."""
    model = load_model(bundled_model_path(2))
    save_model(path, model.network, model.info.replace(**changes))
    return path


def _rig_with(rig: RigModel, role: str, **facts: object) -> RigModel:
    return rig.model_copy(update={role: rig.camera(role).model_copy(update=facts)})


def _restore(model: Path, run_dir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "restore", str(model), str(run_dir), "--out", str(out), "--no-progress",
         "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


def test_a_trained_model_records_its_rig_and_info_shows_it(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.safetensors"
    train([run], out, TINY)
    info = load_model(out).info
    rig = rig_model_for_run(run)
    assert info.rig_model == rig  # the whole rig model, registration included
    assert info.rig_model.registration.source == "calibrated"
    cam = info.lowdose_camera  # from the declared photometry, never the Gain of 7
    assert cam is not None
    assert (cam.offset_adu, cam.gain_e_per_adu, cam.read_noise_e) == (100, 0.5, 1.6)
    assert check_model_for_rig(info, rig) == []  # on its own rig: nothing to say

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    rig_lines = [x for x in text.splitlines() if x.startswith(("rig:", "photometry:"))]
    assert len(rig_lines) == 2, text
    assert "pairscope.sim.devices/DemoCamera" in rig_lines[0]
    assert "0.2 µm" in rig_lines[0] and "0.1 µm" in rig_lines[0]
    assert "×2" in rig_lines[0]
    assert "0.5 e-/ADU" in rig_lines[1] and "(declared)" in rig_lines[1]


def test_unknown_photometry_is_recorded_as_unknown_not_as_gain(
    run: Path, tmp_path: Path
) -> None:
    """A run from before the rig model (no ``rig_model`` in run.json): photometry
    unknown, so the model records no e-/ADU, although the Gain property says 7."""
    old = Path(shutil.copytree(run, tmp_path / "old"))
    info = json.loads((old / "run.json").read_text())
    del info["rig_model"]
    (old / "run.json").write_text(json.dumps(info))
    out = tmp_path / "m.safetensors"
    train([old], out, TINY)
    model = load_model(out).info
    assert model.rig_model is not None
    assert model.rig_model.lowdose.photometry.source == "unknown"
    cam = model.lowdose_camera
    assert cam is not None and cam.gain_e_per_adu is None and cam.offset_adu is None


def test_the_check_refuses_another_factor_or_pixel_size_in_one_line(run: Path) -> None:
    info = load_model(bundled_model_path(2)).info
    rig = rig_model_for_run(run)
    with pytest.raises(RigMismatchError) as err:
        check_model_for_rig(info, rig.model_copy(update={"factor": 4}))
    text = str(err.value)
    assert "\n" not in text and "×2" in text and "×4" in text
    assert "pairscope train RUN" in text and "--model" in text

    with pytest.raises(RigMismatchError) as err:
        check_model_for_rig(info, _rig_with(rig, "lowdose", pixel_size_um=0.22))
    text = str(err.value)
    assert "\n" not in text and "0.2 µm" in text and "0.22 µm" in text
    assert "pairscope train RUN" in text
    assert isinstance(err.value, ValueError)
    # within 5 %: no refusal
    assert (
        check_model_for_rig(info, _rig_with(rig, "lowdose", pixel_size_um=0.206)) == []
    )


def test_the_check_warns_with_both_numbers_on_other_photometry(run: Path) -> None:
    info = load_model(bundled_model_path(2)).info
    rig = rig_model_for_run(run)

    def photometry(e_per_adu: float) -> Photometry:
        return Photometry(e_per_adu=e_per_adu, offset_adu=100.0, source="measured")

    (line,) = check_model_for_rig(
        info, _rig_with(rig, "reference", photometry=photometry(0.8))
    )
    assert "0.5 e-/ADU" in line and "0.8 e-/ADU" in line and "reference" in line
    assert "pairscope train RUN" in line
    # within 20 %, or unknown on this rig: nothing to say
    near = _rig_with(rig, "reference", photometry=photometry(0.55))
    assert check_model_for_rig(info, near) == []
    unknown = _rig_with(rig, "lowdose", photometry=Photometry())
    assert check_model_for_rig(info, unknown) == []


def test_a_run_from_before_the_rig_model_is_not_taken_for_another_camera(
    run: Path,
) -> None:
    """No camera model recorded (and photometry unknown): nothing to warn about."""
    info = json.loads((run / "run.json").read_text())
    del info["rig_model"]
    rig = rig_model_from_info(info)
    assert rig.lowdose.camera_model is None
    assert check_model_for_rig(load_model(bundled_model_path(2)).info, rig) == []


def test_the_bundled_model_on_a_cpp_democamera_run_says_it_was_trained_on_the_demo(
    cpp_run: Path, tmp_path: Path
) -> None:
    info = load_model(bundled_model_path(2)).info
    assert check_model_for_rig(info, rig_model_for_run(cpp_run)) == [DEMO_SENTENCE]
    proc = _restore(bundled_model_path(2), cpp_run, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(DEMO_SENTENCE) == 1, proc.stderr
    assert (tmp_path / "out" / "restored.prediction.ome.tif").is_file()


def test_the_live_preview_says_it_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pairscope")
    with open_rig(CPP_RIG) as rig:
        summary = run_live(
            rig,
            AcquisitionSettings(mode="triggered"),
            useq.MDASequence(time_plan={"interval": 0, "loops": 3}),
            options=LiveOptions(out=tmp_path, headless=True, progress=False),
        )
    assert summary.status == "completed", summary.message
    said = [r.getMessage() for r in caplog.records]
    assert said.count(DEMO_SENTENCE) == 1, said


def test_a_refusal_is_one_line_and_a_nonzero_exit_in_the_cli(
    run: Path, tmp_path: Path
) -> None:
    """A model of 0.3 µm low-dose pixels (same weights) on the 0.2 µm demo rig."""
    model = _variant(
        tmp_path / "wide.safetensors",
        name="wide",
        lowdose_pixel_size_um=0.3,
        reference_pixel_size_um=0.15,
    )
    proc = _restore(model, run, tmp_path / "out")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "pairscope train RUN" in x]
    assert "0.3 µm" in line and "0.2 µm" in line
    assert not (tmp_path / "out").exists()


def test_an_old_model_without_a_rig_model_loads_and_says_its_rig_is_unknown(
    run: Path, tmp_path: Path
) -> None:
    old = ROOT / "tests" / "data" / "format1_demo_x2.safetensors"
    info = load_model(old).info
    assert info.rig_model is None
    (line,) = check_model_for_rig(info, rig_model_for_run(run))
    assert "rig" in line and "unknown" in line
    proc = _restore(old, run, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(line) == 1, proc.stderr


def test_fine_tuning_checks_the_starting_model_against_the_run(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_model_for_run(run)
    wide = _variant(
        tmp_path / "wide.safetensors",
        name="wide",
        lowdose_pixel_size_um=0.3,
        reference_pixel_size_um=0.15,
    )
    with pytest.raises(RigMismatchError, match=r"0\.3 µm"):
        LiveFineTuner(run, None, wide)  # run.json is there: checked at once

    trained_at = _rig_with(
        rig,
        "lowdose",
        photometry=Photometry(e_per_adu=2.0, offset_adu=100.0, source="measured"),
    )
    other = _variant(tmp_path / "other.safetensors", name="other", rig_model=trained_at)
    caplog.set_level(logging.WARNING, logger="pairscope.finetune")
    tuner = LiveFineTuner(run, None, other)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "2 e-/ADU" in said[0] and "0.5 e-/ADU" in said[0], said
    assert tuner.check_rig() == []  # once: not again at the first candidate
    assert len(caplog.records) == 1


def test_model_info_round_trips_the_rig_model(run: Path, tmp_path: Path) -> None:
    """The rig model survives the file (strictly validated JSON) unchanged."""
    rig = rig_model_for_run(run)
    path = _variant(tmp_path / "m.safetensors", rig_model=rig)
    info = load_model(path).info
    assert isinstance(info, ModelInfo) and info.rig_model == rig
    assert FORMAT_VERSION == info.format_version == 3
