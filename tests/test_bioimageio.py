"""bioimage.io export / import: a real trained model, a real frame, bioimage.io's
own test as the judge, and every tampered package refused in one line."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("bioimageio.core")
onnxruntime = pytest.importorskip("onnxruntime")

from pairscope.cli import main  # noqa: E402
from pairscope.io import open_run  # noqa: E402
from pairscope.io.calibration import Registration, save_calibration  # noqa: E402
from pairscope.restore import ModelFileError, load_model, model_sha256  # noqa: E402
from pairscope.train import TrainConfig, train  # noqa: E402

from ._demo_rig import acquire_rig_run  # noqa: E402


@pytest.fixture(scope="module")
def model(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bmz")
    run = Path(shutil.copytree(demo_run, tmp / "run"))
    save_calibration(run, Registration(-0.7, 1.3))
    cfg = TrainConfig(width=4, depth=2, crop=64, batch_size=4, samples_per_epoch=16,
                      epochs=2, block_size=2, progress=False, noise_fit=False,
                      sequential_pairs=True,
                      name="tiny x2")  # fmt: skip
    out = tmp / "tiny.safetensors"
    train([run], out, cfg)
    return out


#: what the package fixture's ``pairscope export`` wrote on stderr
EXPORT_STDERR: list[str] = []


@pytest.fixture(scope="module")
def package(model: Path) -> Path:
    out = model.with_name("tiny.zip")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", str(model), "--bioimageio", str(out)]) == 0
    EXPORT_STDERR.append(err.getvalue())
    return out


def test_export_names_each_step_as_it_starts(package: Path) -> None:
    """Not silent for a minute: each step is named, in order, then the total."""
    lines = EXPORT_STDERR[0].splitlines()
    steps = [
        m
        for ln in lines
        if (m := re.fullmatch(r"export (\d)/4 (.+?): .+ \(at \d+ s\)", ln))
    ]
    assert [m[1] for m in steps] == ["1", "2", "3", "4"], lines
    assert [m[2] for m in steps] == ["test tensors", "TorchScript", "ONNX", "package"]
    assert re.fullmatch(r"export: done in \d+ s", lines[-1]), lines


def test_evaluate_info_and_load_model_read_an_exported_package(
    package: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `pairscope export` zip is a model wherever a model file is (not "a
    pickle-based checkpoint"): read as import-model reads it."""
    loaded = load_model(package)
    assert loaded.sha256 == model_sha256(model) and loaded.path == package
    with pytest.raises(ModelFileError, match="restores ×2"):
        load_model(package, expect_factor=4)
    assert main(["info", str(package)]) == 0
    out = capsys.readouterr().out
    assert "tiny x2" in out and "package:      bioimage.io" in out
    assert model_sha256(model) in out
    run = acquire_rig_run(tmp_path / "runs", frames=2, seed=11, sensor=128)
    code = main(
        ["evaluate", str(package), str(run), "--out", str(tmp_path / "ev"),
         "--max-pairs", "1", "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "pickle" not in err
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["model"]["sha256"] == model_sha256(model)


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


@pytest.mark.slow
def test_bioimageio_test_passes_on_every_weight_format(package: Path) -> None:
    # the field's own judge, as a user runs it: the plain `bioimageio` command
    cmd = [str(Path(sys.executable).parent / "bioimageio"), "test", str(package)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert re.search(rf"✔️\s+weights\.{fmt}\s+Reproduce test outputs", text), fmt
    assert "❌" not in text


def test_package_describes_the_model(package: Path, model: Path) -> None:
    rdf = _rdf(package)
    info = load_model(model).info
    assert rdf["format_version"].startswith("0.5.")
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a["type"] for a in out["axes"]] == ["batch", "channel", "space", "space"]
    y_in, y_out = inp["axes"][2], out["axes"][2]
    assert (y_in["unit"], y_in["scale"]) == ("micrometer", 0.2)
    assert (y_out["unit"], y_out["scale"]) == ("micrometer", 0.1)  # x2 finer
    assert y_out["size"] == {"tensor_id": "input", "axis_id": "y"}
    scale = next(p for p in inp["preprocessing"] if p["id"] == "scale_linear")
    n = info.input_norm
    assert scale["kwargs"]["gain"] == pytest.approx(1 / (n.high - n.low))
    assert scale["kwargs"]["offset"] == pytest.approx(-n.low / (n.high - n.low))
    post = next(p for p in out["postprocessing"] if p["id"] == "scale_linear")
    t = info.target_norm
    assert post["kwargs"] == pytest.approx({"gain": t.high - t.low, "offset": t.low})
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == "UNet" and arch["kwargs"]["factor"] == 2
    meta = rdf["config"]["pairscope"]
    assert meta["model_file_sha256"] == model_sha256(model)
    assert meta["info"]["training"]["width"] == 4
    assert meta["info"]["trained_on"][0]["path"].endswith("run")


def test_test_tensors_are_a_real_frame_and_onnx_reproduces_them(
    package: Path, model: Path
) -> None:
    rdf = _rdf(package)
    with zipfile.ZipFile(package) as zf:
        x = np.load(io.BytesIO(zf.read(rdf["inputs"][0]["test_tensor"]["source"])))
        y = np.load(io.BytesIO(zf.read(rdf["outputs"][0]["test_tensor"]["source"])))
        onnx = zf.read(rdf["weights"]["onnx"]["source"])
    assert x.shape == (1, 1, 64, 64) and y.shape == (1, 1, 128, 128)
    run = open_run(load_model(model).info.trained_on[0].path)
    low = run[next(i for i, r in enumerate(run.records) if r.get("reference"))].lowdose
    h, w = low.shape
    crop = low[(h - 64) // 2 : (h + 64) // 2, (w - 64) // 2 : (w + 64) // 2]
    np.testing.assert_array_equal(x[0, 0], crop.astype(np.float32))
    # apply the package's pre-processing, the ONNX weights, its post-processing
    pre = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_linear"]
    post = [p for p in rdf["outputs"][0]["postprocessing"] if p["id"] == "scale_linear"]
    xin = (x * pre[0]["kwargs"]["gain"] + pre[0]["kwargs"]["offset"]).astype(np.float32)
    session = onnxruntime.InferenceSession(onnx)
    raw = session.run(None, {session.get_inputs()[0].name: xin})[0]
    got = raw * post[0]["kwargs"]["gain"] + post[0]["kwargs"]["offset"]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-2)
    assert np.abs(y - np.repeat(np.repeat(x, 2, -1), 2, -2)).mean() > 1  # not a copy


def test_import_round_trip(
    package: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "back.safetensors"
    assert main(["import-model", str(package), "--out", str(out)]) == 0
    assert model_sha256(out) == model_sha256(model)
    assert "tiny x2" in capsys.readouterr().err
    assert main(["import-model", str(package), "--out", str(out)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err


# -- tampered packages: (how, expected message) ------------------------------------


def _rewrite(package: Path, dest: Path, name: str, data: bytes | None) -> None:
    """Copy ``package`` to ``dest`` with member ``name`` replaced (or removed)."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            if item.filename == name:
                if data is not None:
                    out.writestr(item, data)
            else:
                out.writestr(item, src.read(item.filename))


def _state(package: Path) -> dict:
    with zipfile.ZipFile(package) as zf:
        return torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)


def _edited_weights(package: Path, dest: Path) -> None:
    state = _state(package)
    state["head.bias"] = state["head.bias"] + 0.5
    buf = io.BytesIO()
    torch.save(state, buf)
    _rewrite(package, dest, "weights.pt", buf.getvalue())


def _pickled_weights(package: Path, dest: Path) -> None:
    buf = io.BytesIO()
    torch.save({"head.bias": Path("x")}, buf)  # an object, not a tensor
    _rewrite(package, dest, "weights.pt", buf.getvalue())


def _nan_attachment(package: Path, dest: Path) -> None:
    with zipfile.ZipFile(package) as zf:
        data = bytearray(zf.read("pairscope.safetensors"))
    (n,) = np.frombuffer(bytes(data[:8]), "<u8")
    header = json.loads(bytes(data[8 : 8 + int(n)]))
    begin = header["head.bias"]["data_offsets"][0]
    pos = 8 + int(n) + begin
    data[pos : pos + 4] = np.float32(np.nan).tobytes()
    _rewrite(package, dest, "pairscope.safetensors", bytes(data))


def _other_attachment(package: Path, dest: Path) -> None:
    rdf = _rdf(package)
    rdf["config"]["pairscope"]["model_file_sha256"] = "0" * 64
    _rewrite(package, dest, "rdf.yaml", yaml.safe_dump(rdf).encode())


TAMPERED: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "edited-weights": (
        _edited_weights,
        "weights.pt differs from pairscope.safetensors",
    ),
    "pickled-weights": (_pickled_weights, "weights.pt is not a plain tensor state"),
    "nan-attachment": (
        _nan_attachment,
        "pairscope.safetensors: weights are not finite",
    ),
    "sha-mismatch": (_other_attachment, "not the model file the package was exported"),
    "no-attachment": (
        lambda p, d: _rewrite(
            p, d, "rdf.yaml", yaml.safe_dump({**_rdf(p), "attachments": []}).encode()
        ),
        "not exported by pairscope",
    ),
    "no-rdf": (lambda p, d: _rewrite(p, d, "rdf.yaml", None), "no rdf.yaml"),
    "not-a-zip": (lambda p, d: d.write_bytes(b"PK\x03\x04 junk"), "not a zip file"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_tampered_packages_are_refused(
    case: str, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = TAMPERED[case]
    bad = tmp_path / "bad.zip"
    make(package, bad)
    out = tmp_path / "m.safetensors"
    assert main(["import-model", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pairscope: error: {bad}: ") and "\n" not in err, err
    assert message in err, err
    assert not out.exists()


def test_export_refusals(
    model: Path, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(model), "--bioimageio", str(package)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err
    moved = tmp_path / "moved.safetensors"  # its training run cannot be found
    info = load_model(model).info
    net = load_model(model).network
    from pairscope.restore import save_model

    save_model(moved, net, info.replace(trained_on=()))
    assert main(["export", str(moved), "--bioimageio", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert "pass --sample-run RUN" in err and "\n" not in err.strip()
    assert not (tmp_path / "x.zip").exists()
