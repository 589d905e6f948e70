"""OME metadata takes a camera's photometry from the run's rig model, only where it is
known, and never writes a camera's ``Gain`` property (issue 21)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ome_types
import tifffile

from pairscope.io import RunWriter
from pairscope.rig import DeclaredPhotometry, build_rig_model

from ._io_pairs import RUN_INFO, make_pair


def _write(tmp_path: Path, info: dict[str, Any]) -> Path:
    writer = RunWriter(tmp_path, commit_interval_s=0.01)
    writer.start(info)
    for k in range(3):
        writer.submit(make_pair(k))
    writer.close({"status": "completed"})
    return writer.run_dir


def _ome(path: Path) -> ome_types.OME:
    with tifffile.TiffFile(path) as tif:
        return ome_types.from_xml(tif.ome_metadata, validate=True)


def _detectors(ome: ome_types.OME) -> dict[str, Any]:
    return {d.model: d for d in ome.instruments[0].detectors}


def _image_facts(ome: ome_types.OME, role: str) -> dict[str, str]:
    image = next(im for im in ome.images if im.name.startswith(role))
    refs = {r.id for r in image.annotation_refs}
    ann = next(
        a
        for a in ome.structured_annotations.map_annotations
        if a.id in refs and a.namespace == "pairscope/image"
    )
    return {m.k: m.value for m in ann.value.ms}


def test_a_gain_property_is_never_written_as_the_detector_gain(tmp_path: Path) -> None:
    """A run without a rig model whose cameras report Gain 0.5 and Offset 100."""
    assert RUN_INFO["system_state"]["LowDoseCam"]["Gain"] == "0.5"
    ome = _ome(_write(tmp_path, RUN_INFO) / "lowdose.ome.tif")
    for detector in _detectors(ome).values():
        assert detector.gain is None and detector.offset is None
    for role in ("lowdose", "reference"):
        assert not [k for k in _image_facts(ome, role) if k.startswith("photometry")]


def test_known_photometry_comes_from_the_rig_model(tmp_path: Path) -> None:
    declared = DeclaredPhotometry(
        e_per_adu=0.46, offset_adu=99.0, read_noise_e=1.4, reference="data sheet"
    )
    rig = build_rig_model(RUN_INFO, declared_photometry={"lowdose": declared})
    info = {**RUN_INFO, "rig_model": rig.to_json()}
    ome = _ome(_write(tmp_path, info) / "lowdose.ome.tif")
    detectors = _detectors(ome)
    low, ref = detectors["LowDoseCam"], detectors["ReferenceCam"]
    assert low.offset == 99.0 and low.gain is None  # not the property's 100 / 0.5
    assert ref.offset is None and ref.gain is None  # unknown: not written
    facts = _image_facts(ome, "lowdose")
    assert float(facts["photometry_e_per_adu"]) == 0.46
    assert float(facts["photometry_offset_adu"]) == 99.0
    assert float(facts["photometry_read_noise_e"]) == 1.4
    assert facts["photometry_source"] == "declared: data sheet"
    assert not [k for k in _image_facts(ome, "reference") if k.startswith("photometry")]
