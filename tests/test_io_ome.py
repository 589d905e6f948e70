"""OME metadata a viewer can use, validated against the OME schema with ome-types."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import ome_types
import pytest
import tifffile

import pairscope
from pairscope.io import RunWriter

from ._io_pairs import LOW_PX, REF_PX, RUN_INFO, make_pair


def _ome(path: Path) -> ome_types.OME:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        return ome_types.from_xml(tif.ome_metadata, validate=True)


def _pair_map(ome: ome_types.OME, image: ome_types.model.Image) -> dict[tuple, int]:
    """``(T, Z, C) -> pair`` from the image's pair-index MapAnnotation."""
    refs = {r.id for r in image.annotation_refs}
    ann = next(
        a
        for a in ome.structured_annotations.map_annotations
        if a.id in refs and a.namespace == "pairscope/pair-index"
    )
    out = {}
    for m in ann.value.ms:
        t, z, c = (int(kv.split("=")[1]) for kv in m.k.split(","))
        out[(t, z, c)] = int(m.value)
    return out


def _write(tmp_path: Path, pairs: list) -> Path:
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for p in pairs:
        writer.submit(p)
    writer.close({"status": "completed"})
    return writer.run_dir


def test_sparse_references_positions_and_z_are_real_axes(tmp_path) -> None:
    # 4 timepoints x 2 positions x 3 z; a reference every 3rd trigger
    events = [
        {"t": t, "p": p, "z": z} for t in range(4) for p in range(2) for z in range(3)
    ]
    pairs = [
        make_pair(k, reference=k % 3 == 0, event=ev) for k, ev in enumerate(events)
    ]
    run_dir = _write(tmp_path, pairs)
    low, ref = _ome(run_dir / "lowdose.ome.tif"), _ome(run_dir / "reference.ome.tif")
    # one multi-file dataset: each file lists both, its own images first
    assert low.uuid != ref.uuid
    assert [im.name for im in ref.images] == [im.name for im in low.images][2:] + [
        im.name for im in low.images
    ][:2]
    names = [im.name for im in low.images]
    assert names == [
        "lowdose LowDoseCam position 0",
        "lowdose LowDoseCam position 1",
        "reference ReferenceCam position 0",
        "reference ReferenceCam position 1",
    ]
    manifest = [
        json.loads(x) for x in (run_dir / "pairs.jsonl").read_text().splitlines()
    ]
    for im in low.images:
        px = im.pixels
        role = im.name.split()[0]
        files = {td.uuid.file_name for td in px.tiff_data_blocks}
        assert files == {f"{role}.ome.tif"}  # each plane names its file
        assert px.physical_size_x == pytest.approx(
            LOW_PX if role == "lowdose" else REF_PX
        )
        assert px.physical_size_x_unit.value == "µm"
        assert len(px.planes) == px.size_t * px.size_z * px.size_c
        assert px.channels[0].name.startswith("GFP (")
        assert im.acquisition_date is not None
        assert im.instrument_ref is not None and im.objective_settings is not None
        pos = int(im.name.split()[-1])
        mapping = _pair_map(low, im)
        assert len(mapping) == len(px.planes)
        for plane in px.planes:  # the plane's facts are its pair's facts
            rec = manifest[mapping[(plane.the_t, plane.the_z, plane.the_c)]]
            assert rec["event_index"]["p"] == pos and rec[role] is not None
            assert (
                plane.exposure_time == 20.0
                and plane.position_x == rec["stage_xyz_um"][0]
            )
            assert plane.delta_t == pytest.approx(
                rec[role]["exposure_window_ms"][0] / 1000
            )
        if role == "lowdose":
            assert (px.size_t, px.size_z) == (4, 3)
    assert low.instruments[0].objectives[0].lens_na == 1.2
    assert {d.model for d in low.instruments[0].detectors} == {
        "LowDoseCam",
        "ReferenceCam",
    }
    # tifffile (napari's reader) sees the real axes and the right frames
    with tifffile.TiffFile(run_dir / "lowdose.ome.tif") as tif:
        series = tif.series[0]
        assert series.axes == "TZYX" and series.shape == (4, 3, 16, 16)
        data = series.asarray()
        assert data[2, 1, 0, 0] == pairs[2 * 6 + 0 * 3 + 1].index  # t=2, p=0, z=1
        ref_series = tif.series[2]  # the reference file, linked
        assert ref_series.asarray().shape[-2:] == (32, 32)
    with tifffile.TiffFile(run_dir / "reference.ome.tif") as tif:
        assert tif.series[0].name.startswith("reference")  # what napari shows


def test_channels_and_incomplete_grids(tmp_path) -> None:
    events = [{"t": t, "c": c} for t in range(3) for c in range(2)][:-1]  # cut short
    run_dir = _write(tmp_path, [make_pair(k, event=ev) for k, ev in enumerate(events)])
    ome = _ome(run_dir / "lowdose.ome.tif")
    px = ome.images[0].pixels
    # an interrupted T x C grid is listed along T, with each plane's pair kept
    assert (px.size_t, px.size_c) == (5, 1)
    assert sorted(_pair_map(ome, ome.images[0]).values()) == list(range(5))
    events = [{"t": t, "c": c} for t in range(3) for c in range(2)]
    run_dir = _write(tmp_path, [make_pair(k, event=ev) for k, ev in enumerate(events)])
    px = _ome(run_dir / "lowdose.ome.tif").images[0].pixels
    assert (px.size_t, px.size_c) == (3, 2)
    assert [c.name for c in px.channels] == ["GFP (LowDoseCam)", "LowDoseCam"]


def test_ome_is_derived_from_disk_for_thousands_of_planes(tmp_path) -> None:
    run_dir = _write(tmp_path, [make_pair(k, size=16) for k in range(1500)])
    ome = _ome(run_dir / "reference.ome.tif")
    px = ome.images[0].pixels
    assert px.size_t == 1500 and len(px.tiff_data_blocks) == 1  # contiguous: one block
    with tifffile.TiffFile(run_dir / "reference.ome.tif") as tif:
        data = tif.series[0].asarray()
    assert data.shape == (1500, 16, 16)
    assert np.array_equal(data[:, 0, 0], np.arange(1500) % 65536)
    assert len(pairscope.open_run(run_dir)) == 1500


def test_demo_run_metadata(demo_run: Path) -> None:
    """A real acquisition on the demo microscope."""
    ome = _ome(demo_run / "lowdose.ome.tif")
    info = json.loads((demo_run / "run.json").read_text())
    px = ome.images[0].pixels
    assert px.size_t == info["pairs_written"] == len(px.planes)
    assert px.physical_size_x is not None and px.physical_size_x > 0
    assert all(p.exposure_time is not None and p.delta_t is not None for p in px.planes)
    assert ome.instruments[0].objectives[0].lens_na > 0
