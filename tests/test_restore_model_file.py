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
    FORMAT_VERSION,
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


# -- untrusted files: every check happens before the thing it guards ----------------


def _raw(path: Path, header: object, data: bytes = b"", *, length: int | None = None):
    """Write a safetensors-framed file with an arbitrary (possibly hostile) header."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(blob) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + blob + data)


def _good_parts() -> tuple[dict, bytes]:
    """The header and data section of a valid model file, to be tampered with."""
    net = _net()
    from safetensors.torch import save

    blob = save(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        metadata={"pairscope": _info(net).model_dump_json()},
    )
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _with_meta(path: Path, **changes: object) -> None:
    header, data = _good_parts()
    meta = json.loads(header["__metadata__"]["pairscope"])
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            meta[outer][inner] = value
        else:
            meta[key] = value
    header["__metadata__"]["pairscope"] = json.dumps(meta)
    _raw(path, header, data)


def _with_entry(path: Path, **changes: object) -> None:
    header, data = _good_parts()
    header["head.bias"] = {**header["head.bias"], **changes}
    _raw(path, header, data)


def _nan_weights(path: Path) -> None:
    net = _net()
    with torch.no_grad():
        net.head.bias[1] = float("nan")
    from safetensors.torch import save

    path.write_bytes(
        save(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            metadata={"pairscope": _info(net).model_dump_json()},
        )
    )


def _inf_weights(path: Path) -> None:
    header, data = _good_parts()
    begin = header["inc.0.bias"]["data_offsets"][0]
    inf = struct.pack("<f", float("inf"))
    _raw(path, header, data[:begin] + inf + data[begin + 4 :])


def _trailing(path: Path) -> None:
    header, data = _good_parts()
    _raw(path, header, data + b"\0" * 64)


def _shapes_lie(path: Path) -> None:
    """Metadata says width 8, the weights are a width-4 network's."""
    _with_meta(path, params={"width": 8, "depth": 1, "skip": "bilinear"})


UNTRUSTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "huge-header-length": (
        lambda p: _raw(p, b"{}", length=2**40),
        "header length 1099511627776 is not within 1 byte to 16 MiB",
    ),
    "header-is-a-list": (
        lambda p: _raw(p, b"[1, 2]"),
        r"not a safetensors file \(no JSON",
    ),
    "entry-is-a-number": (
        lambda p: _raw(p, {"head.bias": 5}),
        "header entry 'head.bias' is int 5, not an object",
    ),
    "string-offsets": (
        lambda p: _with_entry(p, data_offsets=["0", "16"]),
        r"'head.bias' has data_offsets \['0', '16'\], not two increasing integers",
    ),
    "float-shape": (
        lambda p: _with_entry(p, shape=[4.0]),
        r"'head.bias' has shape \[4.0\], not a list",
    ),
    "foreign-dtype": (
        lambda p: _with_entry(p, dtype="U8"),
        "'head.bias' has dtype 'U8'",
    ),
    "size-mismatch": (
        lambda p: _with_entry(p, shape=[2]),
        r"declares shape \[2\] F32 \(8 bytes\) but 16 bytes",
    ),
    "metadata-not-strings": (
        lambda p: _raw(p, {"__metadata__": {"pairscope": 5}}),
        "__metadata__ is not an object of strings",
    ),
    "metadata-is-a-list": (
        lambda p: _raw(p, {"__metadata__": {"pairscope": "[1]"}}),
        "invalid pairscope metadata \\(a JSON list",
    ),
    "version-as-string": (
        lambda p: _with_meta(p, format_version="1"),
        "model file format '1' is not supported",
    ),
    "factor-as-string": (
        lambda p: _with_meta(p, factor="2"),
        "factor: Input should be a valid integer",
    ),
    "norm-as-string": (
        lambda p: _with_meta(p, **{"input_norm.low": "100"}),
        "input_norm.low: Input should be a valid number",
    ),
    "width-as-string": (
        lambda p: _with_meta(p, params={"width": "4", "depth": 1}),
        "width='4': Input should be a valid integer",
    ),
    "unknown-param": (
        lambda p: _with_meta(p, params={"width": 4, "depth": 1, "evil": 1}),
        "evil=1: Extra inputs are not permitted",
    ),
    "absurd-width": (
        lambda p: _with_meta(p, params={"width": 10**9, "depth": 1}),
        "width=1000000000: Input should be less than or equal to 512",
    ),
    "too-many-parameters": (
        lambda p: _with_meta(p, params={"width": 512, "depth": 3}),
        "network of [0-9,]+ parameters, more than pairscope builds",
    ),
    "shapes-do-not-fit": (
        _shapes_lie,
        r"weights do not fit the unet .* network .*bias is \[4\], expected \[8\]",
    ),
    "nan-weights": (_nan_weights, r"not finite \(1 NaN/inf values in 'head.bias'\)"),
    "inf-weights": (_inf_weights, r"not finite \(1 NaN/inf values in 'inc.0.bias'\)"),
    "trailing-data": (_trailing, "trailing data: the weights need"),
}


@pytest.mark.parametrize("case", UNTRUSTED)
def test_untrusted_model_files_are_refused_in_one_line(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pairscope.restore import _model_file

    built: list[object] = []
    real_build = _model_file.build_network
    monkeypatch.setattr(
        _model_file,
        "build_network",
        lambda *a, **k: built.append(a) or real_build(*a, **k),
    )
    make, message = UNTRUSTED[case]
    path = tmp_path / "model.safetensors"
    make(path)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert built == []  # refused before any network was built


def test_dev_zero_is_refused_without_being_read(tmp_path: Path) -> None:
    import os
    import threading

    with pytest.raises(ModelFileError, match="/dev/zero: not a regular file"):
        load_model("/dev/zero")
    # a FIFO nobody writes to: opening it to read would wait forever
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    refused: list[str] = []

    def load() -> None:
        with pytest.raises(ModelFileError, match="not a regular file") as err:
            load_model(fifo)
        refused.append(str(err.value))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(60)  # a bound for a hang only
    if reader.is_alive():  # free the blocked open before failing
        with open(fifo, "wb"):
            pass
        raise AssertionError("the FIFO was opened to be read")
    assert refused
    # a regular file that declares a huge header is refused before reading it
    big = tmp_path / "big.safetensors"
    with big.open("wb") as f:
        f.write(struct.pack("<Q", 15 * 2**20) + b"{")
        f.truncate(15 * 2**20 + 8 + 1)  # sparse: a header of 15 MiB, mostly zeros
    with pytest.raises(ModelFileError, match="corrupt safetensors header"):
        load_model(big)


def test_format_1_files_and_the_bundled_models_still_load() -> None:
    """A format-1 file (the ×2 demo model pairscope shipped before format 2) loads;
    the bundled models say how they were trained, on which camera, and how well."""
    import pairscope

    old = load_model(Path(__file__).parent / "data" / "format1_demo_x2.safetensors")
    assert old.info.format_version == 1 and old.info.factor == 2
    assert old.info.training is None and old.info.validation is None
    assert all(torch.isfinite(p).all() for p in old.network.parameters())

    models = Path(pairscope.__file__).parent / "models"
    for name, factor in (("demo_x2", 2), ("demo_x4", 4)):
        model = load_model(models / f"{name}.safetensors", expect_factor=factor)
        info = model.info
        assert info.format_version == FORMAT_VERSION
        assert info.training is not None and info.training["textured_objects"] > 0
        assert info.validation is not None and info.psf_fit is not None
        assert info.lowdose_camera is not None and info.noise_fit is not None
        assert all(torch.isfinite(p).all() for p in model.network.parameters())


def test_save_model_refuses_nan_weights(tmp_path: Path) -> None:
    net = _net()
    with torch.no_grad():
        net.inc[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelFileError, match="not finite"):
        save_model(tmp_path / "m.safetensors", net, _info(net))
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_reports_a_bad_model_in_one_line(
    tmp_path: Path, demo_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pairscope.cli import main

    path = tmp_path / "nan.safetensors"
    _nan_weights(path)
    rc = main(["evaluate", str(path), str(demo_run), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"pairscope: error: {path}: weights are not finite")
    assert "\n" not in err and "Traceback" not in err


def test_describe_model_file_shows_the_metadata(tmp_path: Path) -> None:
    from pairscope.restore import describe_model_file

    path = tmp_path / "m.safetensors"
    _good(path)
    text = describe_model_file(path)
    assert "test-model" in text and "unet" in text and "×2" in text
    assert "ADU 100.0 .. 1100.0" in text and "runs/a" in text
    assert "psnr 31.5" in text
