"""The napari reader: layers with physical scales that overlay (no napari needed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from pairscope._binning import bin_sum
from pairscope.io import RunWriter
from pairscope.io.calibration import Registration, save_calibration
from pairscope.napari import get_reader, read_run

from ._io_pairs import RUN_INFO, make_pair

MANIFEST = Path(__file__).parents[1] / "src/pairscope/napari/napari.yaml"


def _spot(shape: tuple[int, int], y: float, x: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return 100 + 3000 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def _run_with_shifted_cameras(tmp_path: Path, shift: tuple[float, float]) -> Path:
    """Reference spot at reference pixel (40, 50); the low-dose camera is displaced
    so its unbinned pixel p sees reference pixel p + shift (calibration convention)."""
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(6):
        pair = make_pair(k, size=96, reference=k % 3 == 0)
        ref = _spot((96, 96), 40, 50, 2.0).astype(np.uint16)
        low = bin_sum(_spot((96, 96), 40 - shift[0], 50 - shift[1], 2.0), 2)
        object.__setattr__(pair, "lowdose", (low / 4).astype(np.uint16))
        if pair.reference is not None:
            object.__setattr__(pair, "reference", ref)
        writer.submit(pair)
    writer.close()
    save_calibration(writer.run_dir, Registration(shift[0], shift[1], 1.0, 0.1, 6))
    return writer.run_dir


def _world_centroid(data: np.ndarray, kw: dict) -> np.ndarray:
    frame = data[0].astype(float)
    com = np.array(ndi.center_of_mass(np.clip(frame - np.median(frame), 0, None)))
    return com * np.array(kw["scale"][1:]) + np.array(kw["translate"][1:])


def test_layers_overlay_with_the_stored_registration(tmp_path) -> None:
    run_dir = _run_with_shifted_cameras(tmp_path, (4.0, -6.0))
    reader = get_reader(str(run_dir))
    assert reader is not None
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in reader(str(run_dir))}
    assert set(layers) == {"low-dose", "reference"}
    low, low_kw, kind = layers["low-dose"]
    ref, ref_kw, _ = layers["reference"]
    assert kind == "image" and low.shape == (6, 48, 48) and ref.shape == (2, 96, 96)
    assert low_kw["scale"] == pytest.approx((1.0, 0.2, 0.2))
    assert ref_kw["scale"] == pytest.approx((3.0, 0.1, 0.1))  # a reference every 3rd
    # binned pixel 0 covers reference pixels 0 and 1 (centre 0.5), then the shift
    assert low_kw["translate"] == pytest.approx((0.0, 0.1 * (0.5 + 4), 0.1 * (0.5 - 6)))
    # the same spot lands at the same µm in both layers
    np.testing.assert_allclose(
        _world_centroid(low, low_kw), _world_centroid(ref, ref_kw), atol=0.02
    )
    np.testing.assert_allclose(_world_centroid(ref, ref_kw), (4.0, 5.0), atol=0.02)


def test_restored_layer_from_a_restore_output_folder(tmp_path) -> None:
    from pairscope.offline import restore_run
    from pairscope.restore import ModelInfo, UNet, save_model

    run_dir = _run_with_shifted_cameras(tmp_path / "runs", (0.0, 0.0))
    net = UNet(factor=2, width=4, depth=1)
    model = tmp_path / "m.safetensors"
    save_model(model, net, ModelInfo.for_network(net, name="tiny"))
    out = tmp_path / "restored"
    restore_run(model, run_dir, out, progress=False, device="cpu")
    layers = {kw["name"]: (d, kw) for d, kw, _ in get_reader(str(out))(str(out))}
    data, kw = layers["restored (prediction)"]
    assert data.shape == (6, 96, 96) and data.dtype == np.float32
    assert kw["scale"] == pytest.approx((1.0, 0.1, 0.1))
    assert kw["translate"] == pytest.approx((0.0, 0.0, 0.0))
    assert set(layers) == {"low-dose", "reference", "restored (prediction)"}


def test_reader_declines_other_paths(tmp_path) -> None:
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "image.tif")) is None
    assert get_reader([str(tmp_path), str(tmp_path)]) is None


def test_manifest_is_valid_npe2() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "pairscope"
    reader = manifest.contributions.readers[0]
    assert reader.accepts_directories
    (command,) = [c for c in manifest.contributions.commands if c.id == reader.command]
    module, attr = command.python_name.split(":")
    assert getattr(importlib.import_module(module), attr) is get_reader


def test_layers_carry_micrometre_units_for_the_scale_bar(tmp_path, monkeypatch) -> None:
    """napari >= 0.5 labels its scale bar from the layers' units: µm, not pixel."""
    from pairscope.napari import _reader

    run_dir = _run_with_shifted_cameras(tmp_path, (0.0, 0.0))
    layers = read_run(str(run_dir))
    assert len(layers) == 2
    for _, kw, _ in layers:
        assert kw["units"] == ("pixel", "µm", "µm")
        assert kw["axis_labels"] == ("pair", "y", "x")
        assert len(kw["units"]) == len(kw["scale"]) == len(kw["translate"])
        assert kw["metadata"]["pairscope"]["units"] == {
            "pair": "pixel",
            "y": "µm",
            "x": "µm",
        }
    # napari before 0.5 takes neither keyword: the layers leave them out
    monkeypatch.setattr(_reader, "version", lambda name: "0.4.19")
    for _, kw, _ in read_run(str(run_dir)):
        assert "units" not in kw and "axis_labels" not in kw


def test_units_are_ones_napari_understands() -> None:
    import pint

    from pairscope.napari._reader import UNITS

    registry = pint.get_application_registry()
    assert [str(registry[u].units) for u in UNITS] == [
        "pixel",
        "micrometer",
        "micrometer",
    ]
