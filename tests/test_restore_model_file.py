"""Model file round trip and every refusal, each naming its fix."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pairscope.restore import (
    ModelFileError,
    ModelInfo,
    Normalization,
    TrainedRun,
    UNet,
    load_model,
    model_sha256,
    save_model,
)


def _net(factor: int = 2) -> UNet:
    torch.manual_seed(0)
    net = UNet(factor=factor, width=4, depth=1)
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a non-trivial network
    return net


def _info(net: UNet, **kw: object) -> ModelInfo:
    return ModelInfo.for_network(
        net,
        name="test-model",
        input_norm=Normalization(low=100.0, high=1100.0),
        target_norm=Normalization(low=90.0, high=4090.0),
        lowdose_pixel_size_um=0.2,
        reference_pixel_size_um=0.1 * net.factor / 2,
        trained_on=(TrainedRun(path="runs/a", sha256="ab" * 32),),
        metrics={"psnr": 31.5},
        **kw,
    )


def test_round_trip_preserves_outputs_and_metadata(tmp_path: Path) -> None:
    net = _net()
    info = _info(net)
    path = tmp_path / "m.safetensors"
    digest = save_model(path, net, info)
    loaded = load_model(path, expect_factor=2, expect_pixel_size_um=0.2)
    assert loaded.info == info
    assert loaded.sha256 == digest == model_sha256(path)
    assert not loaded.network.training
    x = torch.rand(1, 1, 24, 19)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.network(x), net.eval()(x))


def test_info_cross_checks_pixel_sizes_against_factor() -> None:
    with pytest.raises(ValueError, match="must agree within 5%"):
        ModelInfo.for_network(
            _net(), name="x", lowdose_pixel_size_um=0.4, reference_pixel_size_um=0.1
        )


def _pickle(path: Path) -> None:
    torch.save(_net().state_dict(), path)


def _truncated(path: Path) -> None:
    save_model(path, _net(), _info(_net()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _truncated_header(path: Path) -> None:
    save_model(path, _net(), _info(_net()))
    path.write_bytes(path.read_bytes()[:40])


def _no_metadata(path: Path) -> None:
    save_file({k: v.contiguous() for k, v in _net().state_dict().items()}, path)


def _bad_metadata(path: Path) -> None:
    meta = json.loads(_info(_net()).model_dump_json())
    meta["factor"] = 0
    tensors = {k: v.contiguous() for k, v in _net().state_dict().items()}
    save_file(tensors, path, metadata={"pairscope": json.dumps(meta)})


def _not_safetensors(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 12) + b"hello world!")


def _good(path: Path) -> None:
    save_model(path, _net(), _info(_net()))


CASES: dict[str, tuple[Callable[[Path], None], dict[str, object], str]] = {
    "pickle": (_pickle, {}, "never unpickles.*save_model"),
    "truncated": (_truncated, {}, "truncated.*copy the file again"),
    "truncated-header": (_truncated_header, {}, "truncated.*copy the file again"),
    "missing-metadata": (_no_metadata, {}, "no pairscope metadata.*save_model"),
    "invalid-metadata": (_bad_metadata, {}, "invalid pairscope metadata.*save_model"),
    "not-safetensors": (_not_safetensors, {}, "not a safetensors file"),
    "factor": (
        _good,
        {"expect_factor": 4},
        "restores ×2 but the acquisition bins ×4: choose a model trained for "
        "binning 4 or pass --binning 2",
    ),
    "pixel-size": (
        _good,
        {"expect_pixel_size_um": 0.3},
        "0.2 µm low-dose pixels but the acquisition has 0.3 µm.*choose a model",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_refused_model_files(tmp_path: Path, case: str) -> None:
    make, kwargs, message = CASES[case]
    path = tmp_path / "model.safetensors"
    make(path)
    with pytest.raises(ModelFileError, match=message):
        load_model(path, **kwargs)  # type: ignore[arg-type]


def test_pixel_size_within_tolerance_is_accepted(tmp_path: Path) -> None:
    _good(tmp_path / "m.safetensors")
    load_model(tmp_path / "m.safetensors", expect_pixel_size_um=0.205)


def test_normalization_modes() -> None:
    frame = np.linspace(0, 1000, 10_000, dtype=np.float32).reshape(100, 100)
    fixed = Normalization(low=10, high=20)
    assert fixed.bounds(frame) == (10, 20)
    lo, hi = Normalization(mode="per_frame_percentile", p_low=1, p_high=99).bounds(
        frame
    )
    assert lo == pytest.approx(10, abs=0.5)
    assert hi == pytest.approx(990, abs=0.5)
    with pytest.raises(ValueError, match=r"target_norm\.mode must be 'fixed'"):
        ModelInfo.for_network(
            _net(), name="x", target_norm=Normalization(mode="per_frame_percentile")
        )
