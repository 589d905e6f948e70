"""One run-storage contract, held by every format: written, read, snapshotted,
repaired and opened by the field's readers (bioio, napari) the same way."""

from __future__ import annotations

import json
from pathlib import Path

import bioio
import numpy as np
import pytest
import yaozarrs

import pairscope
from pairscope.io import RunWriter, repair_run, snapshot_run
from pairscope.io import layout as L
from pairscope.napari import get_reader

from ._io_pairs import REF_PX, RUN_INFO, make_pair

pytest.importorskip("tensorstore")  # the OME-Zarr format's writer (test extra)
FORMATS = ("ome-tiff", "ome-zarr")


def _write(root: Path, fmt: str, n: int = 6) -> tuple[Path, list]:
    writer = RunWriter(root, commit_interval_s=0.01, format=fmt)
    writer.start(RUN_INFO)
    pairs = [make_pair(k, reference=k % 2 == 0) for k in range(n)]
    for p in pairs:
        writer.submit(p)
    assert writer.close() == n
    return writer.run_dir, pairs


def _same(run: pairscope.Run, pairs: list) -> None:
    assert len(run) == len(pairs)
    for p, back in zip(pairs, run, strict=True):
        assert np.array_equal(back.lowdose, p.lowdose)
        if p.reference is None:
            assert back.reference is None
        else:
            assert np.array_equal(back.reference, p.reference)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_writes_reads_snapshots_and_repairs_alike(
    tmp_path: Path, fmt: str
) -> None:
    run_dir, pairs = _write(tmp_path / "runs", fmt)
    run = pairscope.open_run(run_dir)
    assert run.storage.name == fmt == run.info["format"]
    _same(run, pairs)
    assert not repair_run(run_dir).changed  # finalised by the writer: nothing to do

    # a snapshot lists some pairs and shares the frames (what fine-tuning trains on)
    snap = snapshot_run(run_dir, tmp_path / "snap", run.records[:3])
    _same(pairscope.open_run(snap), pairs[:3])

    # unfinalised (as after kill -9): repair makes it final again, frames intact
    info = json.loads((run_dir / L.RUN_INFO).read_text())
    info["status"] = "running"
    (run_dir / L.RUN_INFO).write_text(json.dumps(info))
    report = repair_run(run_dir)
    assert report.changed and report.finalize.frames == {"lowdose": 6, "reference": 3}
    _same(pairscope.open_run(run_dir), pairs)
    assert not repair_run(run_dir).changed


@pytest.mark.parametrize("fmt", FORMATS)
def test_napari_opens_every_format_from_the_run_folder(
    tmp_path: Path, fmt: str
) -> None:
    run_dir, pairs = _write(tmp_path, fmt)
    paths = [run_dir] + ([run_dir / L.ZARR_STORE] if fmt == "ome-zarr" else [])
    for path in paths:  # an OME-Zarr run also opens from its store, as dropped
        reader = get_reader(str(path))
        assert reader is not None, path
        layers = {kw["name"]: (d, kw) for d, kw, _ in reader(str(path))}
        low, ref = layers["low-dose"], layers["reference"]
        assert np.array_equal(np.asarray(low[0][1]), pairs[1].lowdose)
        assert low[1]["scale"][-1] == pytest.approx(2 * REF_PX)
        assert ref[1]["scale"][-1] == pytest.approx(REF_PX)


def test_bioio_opens_an_ome_zarr_run_from_the_store_root(tmp_path: Path) -> None:
    """Both detectors are scenes of the store (bioio-ome-zarr reads no
    bioformats2raw layout, so the root lists both images itself), with µm pixel
    sizes; the store validates as OME-Zarr 0.5."""
    run_dir, pairs = _write(tmp_path, "ome-zarr")
    store = run_dir / L.ZARR_STORE
    yaozarrs.validate_zarr_store(str(store))
    image = bioio.BioImage(store)
    assert image.scenes == ("lowdose LowDoseCam", "reference ReferenceCam")
    image.set_scene(0)
    assert image.dims.T == 6 and pytest.approx(0.2) == image.physical_pixel_sizes.X
    assert np.array_equal(image.get_image_data("YX", T=5), pairs[5].lowdose)
    image.set_scene(1)
    assert image.dims.T == 3 and pytest.approx(0.1) == image.physical_pixel_sizes.X
    assert np.array_equal(image.get_image_data("YX", T=1), pairs[2].reference)


def test_bioio_opens_each_detector_file_of_an_ome_tiff_run(tmp_path: Path) -> None:
    run_dir, pairs = _write(tmp_path, "ome-tiff")
    low = bioio.BioImage(run_dir / L.LOWDOSE_TIFF)
    assert low.dims.T == 6 and pytest.approx(0.2) == low.physical_pixel_sizes.X
    assert np.array_equal(low.get_image_data("YX", T=4), pairs[4].lowdose)
    ref = bioio.BioImage(run_dir / L.REFERENCE_TIFF)
    assert ref.dims.T == 3 and pytest.approx(0.1) == ref.physical_pixel_sizes.X
    assert np.array_equal(ref.get_image_data("YX", T=2), pairs[4].reference)


def test_a_run_of_an_unknown_format_is_refused_with_the_choices(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="choose one of ome-tiff, ome-zarr"):
        RunWriter(tmp_path, format="hdf5")
    assert not list(tmp_path.iterdir())  # no run folder made for it
