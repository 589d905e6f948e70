"""``pairscope import``: another rig's paired stacks become a run pairscope can use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import pairscope
from pairscope.io._import import import_pairs

CLI = [sys.executable, "-m", "pairscope.cli"]
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def stacks(
    demo_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The demo run's frames as two plain TIFF stacks (no physical metadata)."""
    folder = tmp_path_factory.mktemp("stacks")
    with pairscope.open_run(demo_run) as run:
        low = np.stack([run[i].lowdose for i in range(len(run))])
        ref = np.stack([run[i].reference for i in range(len(run))])
    tifffile.imwrite(folder / "low.tif", low)
    tifffile.imwrite(folder / "ref.tif", ref)
    return folder / "low.tif", folder / "ref.tif"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "import", *args, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_missing_physical_metadata_names_the_option(stacks, tmp_path) -> None:
    low, ref = stacks
    proc = _cli("--lowdose", str(low), "--reference", str(ref), "--out", str(tmp_path))
    assert proc.returncode == 2 and "--reference-pixel-um" in proc.stderr
    assert "Traceback" not in proc.stderr
    cases = [
        ({"reference_pixel_um": 0.1}, "--offset"),
        ({"reference_pixel_um": 0.1, "offset": 100}, "--gain"),
        ({"reference_pixel_um": 0.1, "offset": 100, "gain": 0.5, "binning": 4},
         "--binning 4"),
        ({"reference_pixel_um": -1, "offset": 100, "gain": 0.5},
         "--reference-pixel-um must be a positive number"),
    ]  # fmt: skip
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            import_pairs(low, ref, tmp_path, progress=False, **options)
    assert list(tmp_path.iterdir()) == []  # no run folder from a refused import


def test_frame_counts_must_match(stacks, tmp_path) -> None:
    low, ref = stacks
    short = tmp_path / "short.tif"
    tifffile.imwrite(short, tifffile.imread(ref)[:5])
    with pytest.raises(ValueError, match=r"has 12 frames and short\.tif 5"):
        import_pairs(low, short, tmp_path, reference_pixel_um=0.1, offset=100, gain=0.5)


def test_plain_stacks_with_options(stacks, demo_run, tmp_path) -> None:
    low, ref = stacks
    proc = _cli("--lowdose", str(low), "--reference", str(ref), "--reference-pixel-um",
                "0.1", "--binning", "2", "--offset", "100", "--gain", "0.5",
                "--out", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    run, original = pairscope.open_run(run_dir), pairscope.open_run(demo_run)
    assert len(run) == len(original) == 12 and run.factor == 2
    for i in (0, 11):
        assert np.array_equal(run[i].lowdose, original[i].lowdose)
        assert np.array_equal(run[i].reference, original[i].reference)
    rec = run.records[0]
    assert rec["lowdose"]["pixel_size_um"] == pytest.approx(0.2)
    assert rec["reference"]["pixel_size_um"] == pytest.approx(0.1)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["pairs_written"] == 12
    assert info["system_state"]["ImportedLowDose"]["Gain"] == "0.5"
    low = info["rig_model"]["lowdose"]["photometry"]
    assert (low["e_per_adu"], low["offset_adu"], low["source"]) == (
        0.5,
        100,
        "declared",
    )
    assert low["method"] == "pairscope import --gain/--offset"


def test_ome_tiff_inputs_supply_the_options(demo_run, tmp_path) -> None:
    run_dir = import_pairs(
        demo_run / "lowdose.ome.tif",
        demo_run / "reference.ome.tif",
        tmp_path,
        progress=False,
    )
    run = pairscope.open_run(run_dir)
    original = pairscope.open_run(demo_run)
    assert len(run) == len(original) and run.factor == original.factor
    assert run.records[0]["reference"]["pixel_size_um"] == pytest.approx(
        original.records[0]["reference"]["pixel_size_um"]
    )
    state = run.info["system_state"]["ImportedLowDose"]
    demo_state = original.info["system_state"]["LowDoseCam"]
    assert float(state["Offset"]) == float(demo_state["Offset"])
    assert float(state["Gain"]) == float(demo_state["Gain"])
    # the photometry pairscope recorded with the run, not a detector's Gain
    photometry = run.info["rig_model"]["reference"]["photometry"]
    assert photometry["e_per_adu"] == 0.5 and "OME metadata" in photometry["method"]


def test_a_detector_gain_in_foreign_ome_metadata_is_not_taken_as_e_per_adu(
    demo_run, tmp_path
) -> None:
    """An OME-TIFF from another tool whose Detector says Gain="7" (an EM gain, an
    analog step): pairscope asks for --gain instead of reading 7 as e-/ADU."""
    import ome_types
    import tifffile
    from ome_types import model as om

    from pairscope.io._import import ImportError_

    for name, px in (("lowdose", 0.2), ("reference", 0.1)):
        with tifffile.TiffFile(demo_run / f"{name}.ome.tif") as tif:
            frames = tif.asarray()
        path = tmp_path / f"{name}.ome.tif"
        tifffile.imwrite(path, frames, ome=True, metadata={"axes": "TYX"})
        ome = ome_types.from_xml(tifffile.tiffcomment(path))
        ome.instruments = [om.Instrument(detectors=[om.Detector(
            id="Detector:0", gain=7.0, offset=100.0, model="EMCCD")])]  # fmt: skip
        pixels = ome.images[0].pixels
        pixels.physical_size_x = pixels.physical_size_y = px
        pixels.channels[0].detector_settings = om.DetectorSettings(id="Detector:0")
        tifffile.tiffcomment(path, ome.to_xml().encode())
    with pytest.raises(ImportError_, match="--gain"):
        import_pairs(tmp_path / "lowdose.ome.tif", tmp_path / "reference.ome.tif",
                     tmp_path / "out", offset=100, progress=False)  # fmt: skip


@pytest.mark.slow
def test_import_train_calibrate_evaluate_restore_round_trip(stacks, tmp_path) -> None:
    from pairscope.evaluate import evaluate
    from pairscope.io.calibration import estimate_registration, save_calibration
    from pairscope.offline import restore_run
    from pairscope.train import TrainConfig, train

    low, ref = stacks
    run_dir = import_pairs(low, ref, tmp_path / "runs", reference_pixel_um=0.1,
                           binning=2, offset=100, gain=0.5, progress=False)  # fmt: skip
    save_calibration(run_dir, estimate_registration(run_dir, max_pairs=4))
    config = TrainConfig(
        width=8, depth=1, epochs=1, batch_size=2, crop=64, samples_per_epoch=4,
        block_size=2, progress=False, threads=2,
    )  # fmt: skip
    result = train([run_dir], tmp_path / "model.safetensors", config)
    assert result.model_path is not None and result.model_path.is_file()
    report = evaluate(
        result.model_path, [run_dir], tmp_path / "eval", max_pairs=2, progress=False
    )
    assert report["pairs"] == 2
    restored = restore_run(result.model_path, run_dir, tmp_path / "restored",
                           progress=False)  # fmt: skip
    assert restored.frames == 12


def test_ome_zarr_inputs(tmp_path) -> None:
    pytest.importorskip("tensorstore")
    from pairscope.io import RunWriter

    from ._io_pairs import RUN_INFO, make_pair

    writer = RunWriter(tmp_path / "zarr", commit_interval_s=0.01, format="ome-zarr")
    writer.start(RUN_INFO)
    pairs = [make_pair(k) for k in range(4)]
    for p in pairs:
        writer.submit(p)
    writer.close()
    store = writer.run_dir / "run.ome.zarr"
    with pytest.raises(ValueError, match="--offset"):  # OME-Zarr has no camera model
        import_pairs(store / "lowdose", store / "reference", tmp_path, progress=False)
    run_dir = import_pairs(store / "lowdose", store / "reference", tmp_path / "out",
                           offset=100, gain=0.5, progress=False)  # fmt: skip
    run = pairscope.open_run(run_dir)
    assert len(run) == 4 and run.factor == 2
    assert run.records[0]["reference"]["pixel_size_um"] == pytest.approx(0.1)
    assert np.array_equal(run[3].lowdose, pairs[3].lowdose)
    assert np.array_equal(run[3].reference, pairs[3].reference)
