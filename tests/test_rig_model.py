"""The rig model: built once per run, declared or measured photometry (never a
camera's Gain property), what is missing said, bad declarations refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import useq
from scipy.ndimage import gaussian_filter

import pairscope
from pairscope.acquire import PairedAcquisition
from pairscope.config import AcquisitionSettings
from pairscope.errors import ConfigError
from pairscope.hardware import RigSpec, open_rig
from pairscope.io import RunWriter
from pairscope.rig import (
    Photometry,
    PhotometryError,
    measure_run_photometry,
    photometry_disagreement,
    photometry_from_frames,
    photometry_from_series,
    rig_model_for_run,
    rig_model_from_info,
    save_measured_photometry,
)

from ._cpp import assert_real_pixels
from .conftest import acquire_demo_run

CONFIGS = Path(__file__).parents[1] / "hardware_configs"


def _camera(
    rng: np.random.Generator,
    electrons: np.ndarray,
    e_per_adu: float = 0.5,
    offset: float = 100.0,
    read_noise: float = 1.6,
) -> np.ndarray:
    counts = rng.poisson(electrons) + rng.standard_normal(electrons.shape) * read_noise
    return np.round(counts / e_per_adu + offset).clip(0, 65535).astype(np.uint16)


def test_a_demo_run_records_the_declared_photometry_and_optics(tmp_path: Path) -> None:
    run_dir = acquire_demo_run(tmp_path, frames=3, sensor=128)
    info = json.loads((run_dir / "run.json").read_text())
    model = rig_model_from_info(info)
    assert info["rig_model"]["version"] == 1
    for role in ("lowdose", "reference"):
        p = model.camera(role).photometry
        assert p.source == "declared" and p.e_per_adu == 0.5 and p.offset_adu == 100
    assert model.factor == 2 and model.lowdose.binning == 2
    assert model.reference.pixel_size_um == pytest.approx(0.1)
    # NA 1.2 at 520 nm from the hub: 0.61 λ/NA
    assert model.optics.rayleigh_um == pytest.approx(0.61 * 0.52 / 1.2)
    assert model.optics.split_ratio == pytest.approx(0.1)
    assert model.optics.light_power_property == "LED-Power_percent"
    assert model.missing == ()


def test_a_cpp_run_never_takes_gain_as_photometry_and_says_what_is_missing(
    tmp_path: Path,
) -> None:
    """DemoCamera's Gain property is 0: the photometry is unknown, never 0 e-/ADU."""
    with open_rig(CONFIGS / "cpp_democamera_rig.yaml") as rig:
        summary = PairedAcquisition(rig, AcquisitionSettings(mode="triggered")).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 6}),
            writer=RunWriter(tmp_path),
        )
    run = pairscope.open_run(summary.run_dir)
    assert_real_pixels(run, every=2)
    model = rig_model_for_run(run)
    assert run.info["system_state"]["LowDoseCam"]["Gain"] == "0"
    for role in ("lowdose", "reference"):
        cam = model.camera(role)
        assert cam.photometry.source == "unknown" and not cam.photometry.known
        assert cam.camera_model == "DemoCamera/DCam"
    missing = " | ".join(f"{m.what}: {m.fix}" for m in model.missing)
    assert "lowdose camera 'LowDoseCam' photometry" in missing
    assert "calibrate-camera" in missing and "light-power" in missing
    # declared in the rig file: NA 1.4 at 520 nm, a 90:10 splitter
    assert model.optics.numerical_aperture == 1.4 and model.optics.split_ratio == 0.1


def test_a_run_from_before_the_rig_model_gets_one_with_unknown_photometry(
    tmp_path: Path,
) -> None:
    run_dir = acquire_demo_run(tmp_path, frames=2, sensor=128)
    info = json.loads((run_dir / "run.json").read_text())
    del info["rig_model"]
    model = rig_model_from_info(info)  # the cameras' Gain is 0.5 here: not read
    assert model.lowdose.photometry.source == "unknown"
    assert model.factor == 2 and model.reference.label == "ReferenceCam"


def test_a_damaged_or_newer_rig_model_is_one_clear_error(tmp_path: Path) -> None:
    run_dir = acquire_demo_run(tmp_path, frames=2, sensor=128)
    info = json.loads((run_dir / "run.json").read_text())
    info["rig_model"]["version"] = 7
    with pytest.raises(ValueError, match=r"version 7.*update pairscope"):
        rig_model_from_info(info)
    info["rig_model"]["version"] = 1
    info["rig_model"]["factor"] = -2
    with pytest.raises(ValueError, match="damaged: factor"):
        rig_model_from_info(info)


@pytest.mark.parametrize(
    ("photometry", "problem"),
    [
        ("{e_per_adu: -0.5, offset_adu: 100}", "e_per_adu"),
        ("{e_per_adu: .nan, offset_adu: 100}", "e_per_adu"),
        ("{e_per_adu: 0.5, offset_adu: .inf}", "offset_adu"),
        ("{e_per_adu: 0.5, offset_adu: 100, read_noise_e: -1}", "read_noise_e"),
        ("{e_per_adu: 0.5}", "offset_adu"),
    ],
)
def test_bad_declared_photometry_is_one_line(
    tmp_path: Path, photometry: str, problem: str
) -> None:
    text = (
        (CONFIGS / "cpp_democamera_rig.yaml")
        .read_text()
        .replace(
            "    role: lowdose\n", f"    role: lowdose\n    photometry: {photometry}\n"
        )
    )
    rig = tmp_path / "rig.yaml"
    rig.write_text(text.replace("config: cpp_", f"config: {CONFIGS}/cpp_"))
    with pytest.raises(ConfigError) as err:
        RigSpec.from_file(rig)
    message = str(err.value)
    assert "\n" not in message and problem in message and str(rig) in message


def test_the_photon_transfer_series_recovers_the_sensor() -> None:
    rng = np.random.default_rng(1)
    dark = [_camera(rng, np.zeros((128, 128))) for _ in range(4)]
    flats = [
        [_camera(rng, np.full((128, 128), e)) for _ in range(2)] for e in (50, 200, 800)
    ]
    p = photometry_from_series(dark, flats)
    assert p.source == "measured"
    assert p.e_per_adu == pytest.approx(0.5, rel=0.03)
    assert p.offset_adu == pytest.approx(100, abs=0.5)
    assert p.read_noise_e == pytest.approx(1.6, rel=0.15)


def test_a_series_without_light_or_with_saturation_is_refused() -> None:
    rng = np.random.default_rng(2)
    dark = [_camera(rng, np.zeros((64, 64))) for _ in range(2)]
    with pytest.raises(PhotometryError, match="no brighter than the dark"):
        photometry_from_series(dark, [[_camera(rng, np.zeros((64, 64)))] * 2] * 2)
    bright = [[_camera(rng, np.full((64, 64), 40000.0)) for _ in range(2)]]
    with pytest.raises(PhotometryError, match="saturated"):
        photometry_from_series(dark, bright * 2)


def test_frames_of_a_specimen_give_the_conversion_gain() -> None:
    rng = np.random.default_rng(3)
    scene = gaussian_filter(rng.random((256, 256)) ** 4, 3)
    scene = scene / scene.max() * 800 + 2
    p = photometry_from_frames([_camera(rng, scene) for _ in range(4)])
    assert p.e_per_adu == pytest.approx(0.5, rel=0.10)
    flat = [np.full((128, 128), 100, np.uint16)] * 3  # no noise at all
    with pytest.raises(PhotometryError):
        photometry_from_frames(flat)


def test_frames_of_a_still_sparse_bright_specimen_give_the_conversion_gain() -> None:
    """A bead slide: every bright pixel lies on a bead, so the frames' local noise
    reads the beads' curvature (the spatial estimate alone said 0.24 e-/ADU on the
    demo's slide); the still frames' differences read the noise (temporal)."""
    rng = np.random.default_rng(4)
    points = np.zeros((256, 256))
    points[tuple(rng.integers(8, 248, (2, 150)))] = 3000.0  # electrons per bead
    scene = gaussian_filter(points, 1.2) + 2
    p = photometry_from_frames([_camera(rng, scene) for _ in range(8)])
    assert p.e_per_adu == pytest.approx(0.5, rel=0.10)
    assert "temporal" in p.method


def test_a_demo_run_measures_its_reference_camera(tmp_path: Path) -> None:
    run_dir = acquire_demo_run(tmp_path, frames=8, sensor=256)
    measured = measure_run_photometry(pairscope.open_run(run_dir))
    ref = measured["reference"]
    assert isinstance(ref, Photometry), ref
    assert ref.e_per_adu == pytest.approx(0.5, rel=0.10)  # the simulated sensor's


def test_measured_photometry_is_read_back_but_a_declaration_stands(
    tmp_path: Path,
) -> None:
    run_dir = acquire_demo_run(tmp_path, frames=2, sensor=128)
    measured = Photometry(e_per_adu=0.8, offset_adu=99.0, source="measured", method="x")
    save_measured_photometry(run_dir, {"reference": measured})
    model = rig_model_for_run(run_dir)
    declared = model.reference.photometry
    assert declared.source == "declared" and declared.e_per_adu == 0.5
    line = photometry_disagreement("reference", declared, measured)
    assert line is not None and "60%" in line and "0.5" in line and "0.8" in line
    assert photometry_disagreement("reference", declared, declared) is None
    info = json.loads((run_dir / "run.json").read_text())
    del info["rig_model"]  # unknown photometry: the measurement fills it
    (run_dir / "run.json").write_text(json.dumps(info))
    assert rig_model_for_run(run_dir).reference.photometry.e_per_adu == 0.8


def test_calibrate_measures_both_cameras_of_a_demo_run_and_checks_the_declaration(
    tmp_path: Path,
) -> None:
    """`pairscope calibrate RUN`: the registration and both cameras' photometry
    (reference from its frames, low-dose against it), stored with the run."""
    import subprocess
    import sys

    run_dir = acquire_demo_run(tmp_path, frames=8, sensor=256)
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "calibrate", str(run_dir),
         "--max-pairs", "6"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("the frames agree") == 2, proc.stderr
    stored = json.loads((run_dir / "calibration.json").read_text())["photometry"]
    for role in ("lowdose", "reference"):
        assert stored[role]["source"] == "measured"
        assert stored[role]["e_per_adu"] == pytest.approx(
            0.5, rel=0.10
        )  # 6 pairs, 256²
    assert "registration" in stored or "registration" in json.loads(
        (run_dir / "calibration.json").read_text()
    )


def test_the_training_noise_fit_never_reads_the_gain_property(tmp_path: Path) -> None:
    """A run from before the rig model whose cameras report Gain 0 (as DemoCamera
    does): the reference photometry is measured from its frames, the fit holds."""
    from pairscope.train import fit_noise_model

    run_dir = acquire_demo_run(tmp_path, frames=8, sensor=256)
    info = json.loads((run_dir / "run.json").read_text())
    del info["rig_model"]
    for label in ("LowDoseCam", "ReferenceCam"):
        info["system_state"][label]["Gain"] = "0"
    (run_dir / "run.json").write_text(json.dumps(info))
    for line in (run_dir / "pairs.jsonl").read_text().splitlines():
        assert "light_power" in json.loads(line)
    nm = fit_noise_model([run_dir])
    assert nm.reference_gain_e_per_adu == pytest.approx(0.5, rel=0.10)
    assert nm.gain_e_per_adu == pytest.approx(0.5, rel=0.10)
    assert nm.offset_adu == pytest.approx(100, abs=3)


def test_the_noise_fit_of_a_cpp_run_is_one_clear_error(tmp_path: Path) -> None:
    """No light-power property (light_power null) and noise-free DemoCamera waves:
    no crash, one line saying why and what to do."""
    from pairscope.train import fit_noise_model

    with open_rig(CONFIGS / "cpp_democamera_rig.yaml") as rig:
        summary = PairedAcquisition(rig, AcquisitionSettings(mode="triggered")).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": 6}),
            writer=RunWriter(tmp_path),
        )
    run = pairscope.open_run(summary.run_dir)
    assert run.records[0].get("light_power") is None
    with pytest.raises(ValueError) as err:
        fit_noise_model([run])
    assert "photometry" in str(err.value) and "calibrate-camera" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_device_figure_out_of_range_is_not_taken_for_the_optics(
    tmp_path: Path,
) -> None:
    """A device reporting an NA of 2.5 or a wavelength in µm: not the optics' figure
    (it failed the run's start with a validation error), said missing instead."""
    from pairscope.rig import build_rig_model

    run_dir = acquire_demo_run(tmp_path, frames=2, sensor=128)
    info = json.loads((run_dir / "run.json").read_text())
    info["system_state"]["DemoHub"]["NumericalAperture"] = "2.5"
    info["system_state"]["DemoHub"]["EmissionWavelength_nm"] = "0.52"
    model = build_rig_model(info)
    assert model.optics.numerical_aperture is None
    assert model.optics.wavelength_nm is None
    assert any("objective NA" in m.what for m in model.missing)
