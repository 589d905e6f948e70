"""``pairscope restore`` on a sparse-reference demo run, and the one-call API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import ome_types
import pytest
import tifffile
import torch

import pairscope
from pairscope.config import AcquisitionSettings
from pairscope.restore import ModelInfo, Normalization, UNet, save_model

from .conftest import acquire_demo_run

CLI = [sys.executable, "-m", "pairscope.cli"]
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return acquire_demo_run(
        tmp_path_factory.mktemp("sparse"),
        frames=7,
        settings=AcquisitionSettings(mode="sparse", reference_every=3),
    )


def _model(path: Path, factor: int = 2) -> tuple[Path, str, UNet, ModelInfo]:
    torch.manual_seed(0)
    net = UNet(factor=factor, width=8, depth=2)
    info = ModelInfo.for_network(
        net,
        name=f"test-x{factor}",
        lowdose_pixel_size_um=0.1 * factor,
        reference_pixel_size_um=0.1,
        input_norm=Normalization(low=150.0, high=2500.0),
        target_norm=Normalization(low=110.0, high=900.0),
    )
    sha = save_model(path, net, info)
    return path, sha, net, info


def test_restore_cli_writes_every_frame_as_marked_predictions(
    sparse_run, tmp_path
) -> None:
    model, sha, _net, _info = _model(tmp_path / "m.safetensors")
    out = tmp_path / "restored"
    proc = subprocess.run(
        [*CLI, "restore", str(model), str(sparse_run), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "restoring" in proc.stderr  # the progress bar
    run = pairscope.open_run(sparse_run)
    assert len(run.with_reference()) == 3 and len(run) == 7  # sparse: t 0, 3, 6
    index = [json.loads(x) for x in (out / "restored.jsonl").read_text().splitlines()]
    assert [r["pair"] for r in index] == list(range(7))  # every low-dose frame
    assert all(r["prediction"] and r["model_sha256"] == sha for r in index)
    with tifffile.TiffFile(out / "restored.prediction.ome.tif") as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
        data = tif.series[0].asarray()
    image = ome.images[0]
    assert "prediction" in image.name and sha in image.description
    px = image.pixels
    assert px.physical_size_x == pytest.approx(0.1) and px.size_t == 7
    assert [p.the_t for p in px.planes] == list(range(7))  # T index = pair index here
    assert data.shape == (7, 256, 256) and data.dtype == np.float32
    for i in (0, 4):  # the one-call API gives the same frames
        expect = pairscope.restore_frame(model, run[i].lowdose, device="cpu")
        np.testing.assert_allclose(data[i], expect, rtol=1e-4, atol=1e-2)
    meta = json.loads((out / "restore.json").read_text())
    assert meta["model_sha256"] == sha and meta["frames"] == 7 and meta["prediction"]
    again = subprocess.run(
        [*CLI, "restore", str(model), str(sparse_run), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    ensemble = pairscope.offline.restore_run(
        model, sparse_run, tmp_path / "ensemble", self_ensemble=True, progress=False
    )
    meta = json.loads((ensemble.out / "restore.json").read_text())
    assert meta["self_ensemble"] is True and meta["frames"] == 7
    assert "Traceback" not in again.stderr


def test_restore_frame_applies_the_models_own_normalisation(tmp_path) -> None:
    model, _sha, net, _info = _model(tmp_path / "m.safetensors")
    frame = np.random.default_rng(1).integers(100, 3000, (64, 64)).astype(np.uint16)
    got = pairscope.restore_frame(model, frame, device="cpu")
    with torch.inference_mode():
        x = (torch.from_numpy(frame.astype(np.float32)) - 150.0) / (2500.0 - 150.0)
        y = net.eval()(x[None, None])[0, 0].numpy() * (900.0 - 110.0) + 110.0
    assert got.shape == (128, 128)
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-2)


def test_a_model_for_another_binning_is_refused(sparse_run, tmp_path) -> None:
    model, *_ = _model(tmp_path / "x4.safetensors", factor=4)
    proc = subprocess.run(
        [*CLI, "restore", str(model), str(sparse_run), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "restores ×4" in proc.stderr
    assert "Traceback" not in proc.stderr
