"""`pairscope export` without its extra, and zip files that are not model packages
(fast: no export is run; the exported package's own tests are in test_bioimageio)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import torch

from pairscope.cli import main
from pairscope.restore import ModelFileError, ModelInfo, UNet, load_model, save_model


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    net = UNet(factor=2, width=4, depth=1)
    path = tmp_path / "tiny.safetensors"
    save_model(path, net, ModelInfo.for_network(net, name="tiny"))
    return path


@pytest.mark.parametrize("missing", [("onnxruntime",), ("onnx", "bioimageio.core")])
def test_export_without_the_extra_ends_in_one_line_naming_it(
    missing: tuple[str, ...],
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for module in missing:  # as if not installed: importing it fails
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "pkg.zip"
    assert main(["export", str(tiny_model), "--bioimageio", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("pairscope: error: export needs the 'export' extra (")
    assert err.endswith('pip install "pairscope[export]"'), err
    for module in missing:
        assert module in err
    assert not out.exists()


def test_a_pickle_zip_is_still_refused_as_a_checkpoint(tmp_path: Path) -> None:
    """torch.save writes a zip too; it is not a bioimage.io package."""
    path = tmp_path / "checkpoint.zip"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match="pickle-based checkpoint"):
        load_model(path)


def test_a_zip_of_something_else_is_not_taken_for_a_package(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError):
        load_model(path)
