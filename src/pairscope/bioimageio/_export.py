"""Export a pairscope model file as a bioimage.io model package (spec 0.5).

The package holds the network three ways (``pytorch_state_dict`` with the
architecture's source file, TorchScript, ONNX), test tensors made from a real
low-dose frame and pairscope's own restoration of it, pre/post-processing that
reproduces pairscope's normalisation exactly (``scale_linear`` for a fixed
normalisation, ``scale_range`` for per-frame percentiles, ``scale_linear`` back
to reference ADU), typed axes in µm whose output size is the input's times the
factor, and the pairscope model file itself (``pairscope.safetensors``) with its
metadata in ``config.pairscope`` as provenance.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
import torch

from pairscope.errors import PairscopeError
from pairscope.restore import LoadedModel, _networks, describe_model_file, load_model

__all__ = [
    "EXPORT_STEPS",
    "PAIRSCOPE_ATTACHMENT",
    "ExportExtraMissing",
    "export_bioimageio",
    "require_export_extra",
    "sample_from_run",
]

logger = logging.getLogger(__name__)

PAIRSCOPE_ATTACHMENT = "pairscope.safetensors"
_SAMPLE = 64  # low-dose pixels per side of the test tensor
_TAGS = ("pairscope", "restoration", "super-resolution", "denoising", "2d", "pytorch")
#: the steps of an export, in order, each announced through ``on_step``
EXPORT_STEPS = {
    "test tensors": "restoring a real low-dose frame",
    "TorchScript": "state dict and traced network",
    "ONNX": "exporting the network, opset 17",
    "package": "describing, validating and zipping, bioimage.io spec 0.5",
}
#: what the ``export`` extra installs, as imported
_EXTRA_MODULES = ("bioimageio.core", "bioimageio.spec", "onnx", "onnxruntime")
INSTALL_EXTRA = 'pip install "pairscope[export]"'


class ExportExtraMissing(PairscopeError, ImportError):
    """A package of the ``export`` extra is not installed; the message says how."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def require_export_extra() -> None:
    """Raise :class:`ExportExtraMissing` (one line) unless the ``export`` extra's
    packages can be imported."""
    missing = [m for m in _EXTRA_MODULES if not _installed(m)]
    if missing:
        raise ExportExtraMissing(
            f"export needs the 'export' extra ({', '.join(missing)} not "
            f"installed): {INSTALL_EXTRA}"
        )
    if _spec_breaks_with_pydantic():
        raise ExportExtraMissing(
            "bioimageio.spec < 0.5.14 cannot write packages with pydantic >= 2.14 "
            "(its serializers fail); the 'export' extra asks for pydantic < 2.14: "
            f"{INSTALL_EXTRA}"
        )


def _spec_breaks_with_pydantic() -> bool:
    """bioimageio.spec before 0.5.14 (which bioimageio.core 0.11 pins) passes
    pydantic's serialization info positionally to a wrap serializer's handler;
    pydantic 2.14 reads it as ``index_key`` and every package write fails."""
    from importlib.metadata import PackageNotFoundError, version

    def release(name: str) -> tuple[int, ...]:
        try:
            text = version(name)
        except PackageNotFoundError:
            return ()
        return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())

    spec, pyd = release("bioimageio.spec"), release("pydantic")
    return bool(spec and pyd) and spec < (0, 5, 14) and pyd >= (2, 14)


def sample_from_run(run: str | Path, *, size: int = _SAMPLE) -> np.ndarray:
    """A central ``size``² crop (float32 ADU) of the first low-dose frame with a
    reference partner in ``run`` (a real pair, as bioimage.io test input)."""
    from pairscope.io import open_run

    opened = open_run(run)
    for i, rec in enumerate(opened.records):
        if rec.get("lowdose") and rec.get("reference"):
            low = np.asarray(opened[i].lowdose, dtype=np.float32)
            break
    else:
        raise ValueError(f"{run}: no pair with both frames to make test tensors from")
    h, w = low.shape
    s = min(size, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(low[y0 : y0 + s, x0 : x0 + s])


def _restore(model: LoadedModel, frame: np.ndarray) -> np.ndarray:
    """pairscope's restoration of ``frame`` in reference ADU (as the live restorer)."""
    info = model.info
    lo, hi = info.input_norm.bounds(frame)
    tlo, thi = info.target_norm.low, info.target_norm.high
    x = torch.from_numpy((frame - lo) * (1.0 / (hi - lo)))[None, None]
    with torch.inference_mode():
        y = model.network(x)
    return (y[0, 0].float() * (thi - tlo) + tlo).numpy().astype(np.float32)


def _preprocessing(model: LoadedModel) -> list[Any]:
    from bioimageio.spec.model import v0_5 as bmz

    norm = model.info.input_norm
    steps: list[Any] = [
        bmz.EnsureDtypeDescr(kwargs=bmz.EnsureDtypeKwargs(dtype="float32"))
    ]
    if norm.mode == "fixed":
        scale = 1.0 / (norm.high - norm.low)
        steps.append(
            bmz.ScaleLinearDescr(
                kwargs=bmz.ScaleLinearKwargs(gain=scale, offset=-norm.low * scale)
            )
        )
    else:
        steps.append(
            bmz.ScaleRangeDescr(
                kwargs=bmz.ScaleRangeKwargs(
                    axes=[bmz.AxisId("y"), bmz.AxisId("x")],
                    min_percentile=norm.p_low,
                    max_percentile=norm.p_high,
                )
            )
        )
    return steps


def _postprocessing(model: LoadedModel) -> list[Any]:
    from bioimageio.spec.model import v0_5 as bmz

    t = model.info.target_norm
    return [
        bmz.ScaleLinearDescr(
            kwargs=bmz.ScaleLinearKwargs(gain=t.high - t.low, offset=t.low)
        ),
        bmz.EnsureDtypeDescr(kwargs=bmz.EnsureDtypeKwargs(dtype="float32")),
    ]


def _axes(model: LoadedModel) -> tuple[list[Any], list[Any]]:
    """Typed axes; the output's spatial size is the input's times the factor."""
    from bioimageio.spec.model import v0_5 as bmz

    info = model.info
    f = info.factor
    low_px = info.lowdose_pixel_size_um
    ref_px = info.reference_pixel_size_um or (low_px / f if low_px else None)
    unit: Literal["micrometer"] | None = "micrometer" if low_px else None
    in_scale, out_scale = (low_px, ref_px) if low_px and ref_px else (float(f), 1.0)
    stride = model.network.stride
    inputs: list[Any] = [
        bmz.BatchAxis(),
        bmz.ChannelAxis(channel_names=[bmz.Identifier("lowdose")]),
    ]
    outputs: list[Any] = [
        bmz.BatchAxis(),
        bmz.ChannelAxis(channel_names=[bmz.Identifier("restored")]),
    ]
    for ax in ("y", "x"):
        inputs.append(
            bmz.SpaceInputAxis(
                id=bmz.AxisId(ax),
                size=bmz.ParameterizedSize(min=max(8, stride), step=stride),
                unit=unit,
                scale=in_scale,
            )
        )
        outputs.append(
            bmz.SpaceOutputAxis(
                id=bmz.AxisId(ax),
                size=bmz.SizeReference(
                    tensor_id=bmz.TensorId("input"), axis_id=bmz.AxisId(ax)
                ),
                unit=unit,
                scale=out_scale,
            )
        )
    return inputs, outputs


def _readme(model_file: Path, folder: Path) -> Path:
    readme = folder / "README.md"
    readme.write_text(
        f"# {load_model(model_file).info.name}\n\n"
        "A pairscope restoration model: a low-dose, binned frame in, a frame on the "
        "reference camera's finer grid out (upscaled by the binning factor), "
        "trained on pairs acquired simultaneously on a low-dose and a reference "
        "camera.\n\nInput and output are in camera ADU; the pre- and "
        "post-processing reproduce pairscope's normalisation.  Check restorations "
        "against a reference acquisition before trusting them: a network predicts, "
        "it cannot create information.\n\n## What the model file records\n\n```\n"
        + describe_model_file(model_file)
        + "\n```\n\n# Validation\n\n"
        + _validation_text(load_model(model_file))
    )
    return readme


def _validation_text(model: LoadedModel) -> str:
    val = model.info.validation
    if val is None:
        return (
            "No validation scores are stored with this model.  Evaluate it on your "
            "own pairs with `pairscope evaluate MODEL RUN --out REPORT`.\n"
        )
    psnr = "n/a" if val.psnr_db is None else f"{val.psnr_db:.2f} dB"
    bicubic = "n/a" if val.bicubic_psnr_db is None else f"{val.bicubic_psnr_db:.2f} dB"
    return (
        f"On {val.n_pairs} held-out pairs (not trained on) the stored weights "
        f"({val.selected} epoch {val.epoch}) score PSNR {psnr} against the "
        f"reference, bicubic upsampling {bicubic} (affine fit to the reference, data "
        "range = the reference's 1-99.8 percentile span).  PSNR is not resolution: "
        "run `pairscope evaluate` for the two-point and FRC tables.\n"
    )


def _weights(
    model: LoadedModel,
    sample: torch.Tensor,
    folder: Path,
    step: Callable[[str], None],
) -> Any:
    """State dict (.pt, tensors only), TorchScript and ONNX, all of one network."""
    from bioimageio.spec.model import v0_5 as bmz

    step("TorchScript")

    net = model.network.eval()
    info = model.info
    state = folder / "weights.pt"
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, buffer)
    state.write_bytes(buffer.getvalue())
    with warnings.catch_warnings():  # tracer deprecation/boolean notes: expected
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, sample)
        script = folder / "weights.torchscript.pt"
        traced.save(str(script))
        step("ONNX")
        onnx = folder / "weights.onnx"
        torch.onnx.export(
            net,
            (sample,),
            str(onnx),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "b", 2: "h", 3: "w"},
                          "output": {0: "b", 2: "fh", 3: "fw"}},
            opset_version=17,
            dynamo=False,
        )  # fmt: skip
    version = bmz.Version(torch.__version__.split("+")[0])
    kwargs = {"factor": info.factor, **info.params}
    return bmz.WeightsDescr(
        pytorch_state_dict=bmz.PytorchStateDictWeightsDescr(
            source=state,
            architecture=bmz.ArchitectureFromFileDescr(
                source=Path(_networks.__file__),
                callable=bmz.Identifier(type(net).__name__),
                kwargs=kwargs,
            ),
            pytorch_version=version,
        ),
        torchscript=bmz.TorchscriptWeightsDescr(
            source=script, pytorch_version=version, parent="pytorch_state_dict"
        ),
        onnx=bmz.OnnxWeightsDescr(
            source=onnx, opset_version=17, parent="pytorch_state_dict"
        ),
    )


def export_bioimageio(
    model_file: str | Path,
    out: str | Path,
    *,
    sample: np.ndarray | None = None,
    sample_run: str | Path | None = None,
    authors: list[str] | None = None,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Write ``model_file`` as a bioimage.io model package ``out`` (.zip).

    The test input is ``sample`` (a low-dose frame in ADU), or a crop of a real
    low-dose frame from ``sample_run``, or from the first run the model was
    trained on if that folder still exists.  The model file is checked exactly as
    :func:`pairscope.restore.load_model` does before anything is written.
    ``on_step`` is called with each of :data:`EXPORT_STEPS` as it starts.  Without
    the ``export`` extra: :class:`ExportExtraMissing`, before any work.
    """
    require_export_extra()
    step = on_step or (lambda name: None)
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bmz

    model_file, out = Path(model_file), Path(out)
    if out.exists() and not force:
        raise ValueError(f"{out} exists: pass --force to overwrite it")
    model = load_model(model_file)
    info = model.info
    if sample is None:
        runs = [Path(sample_run)] if sample_run else [
            Path(r.path) for r in info.trained_on if Path(r.path).is_dir()
        ]  # fmt: skip
        if not runs:
            raise ValueError(
                f"{model_file}: its training runs are not on this machine, so there "
                "is no real frame for the test tensors: pass --sample-run RUN"
            )
        sample = sample_from_run(runs[0])
    sample = np.asarray(sample, dtype=np.float32)
    s = model.network.stride
    h, w = (sample.shape[0] // s) * s, (sample.shape[1] // s) * s
    if min(h, w) < max(8, s):
        raise ValueError(f"the test frame {sample.shape} is smaller than {max(8, s)}²")
    sample = np.ascontiguousarray(sample[:h, :w])
    step("test tensors")
    restored = _restore(model, sample)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "test_input.npy", sample[None, None])
        np.save(folder / "test_output.npy", restored[None, None])
        tifffile.imwrite(folder / "sample_input.tif", sample)
        tifffile.imwrite(folder / "sample_output.tif", restored)
        (folder / PAIRSCOPE_ATTACHMENT).write_bytes(model_file.read_bytes())
        in_axes, out_axes = _axes(model)
        lo, hi = info.input_norm.bounds(sample)
        x = torch.from_numpy((sample - lo) / np.float32(hi - lo))[None, None]
        weights = _weights(model, x, folder, step)
        step("package")
        descr = bmz.ModelDescr(
            name=_package_name(info.name),
            description=(
                f"pairscope {info.arch} restoring low-dose frames x{info.factor} "
                "onto the reference camera's grid (trained on simultaneous pairs)"
            ),
            authors=[bmz.Author(name=a) for a in (authors or ["pairscope user"])],
            cite=[
                bmz.CiteEntry(
                    text="Weigert et al. 2018, Content-aware image restoration (CARE)",
                    doi=bmz.Doi("10.1038/s41592-018-0216-7"),
                ),
                bmz.CiteEntry(
                    text="Fang et al. 2021, Deep learning-based point-scanning "
                    "super-resolution imaging (PSSR)",
                    doi=bmz.Doi("10.1038/s41592-021-01080-z"),
                ),
            ],
            license=bmz.LicenseId("BSD-3-Clause"),
            documentation=bmz.FileDescr(source=_readme(model_file, folder)),
            tags=list(_TAGS),
            inputs=[
                bmz.InputTensorDescr(
                    id=bmz.TensorId("input"),
                    description="low-dose frame, camera ADU",
                    axes=in_axes,
                    test_tensor=bmz.FileDescr(source=folder / "test_input.npy"),
                    sample_tensor=bmz.FileDescr(source=folder / "sample_input.tif"),
                    preprocessing=_preprocessing(model),
                )
            ],
            outputs=[
                bmz.OutputTensorDescr(
                    id=bmz.TensorId("output"),
                    description=f"restored frame (x{info.factor}), reference ADU",
                    axes=out_axes,
                    test_tensor=bmz.FileDescr(source=folder / "test_output.npy"),
                    sample_tensor=bmz.FileDescr(source=folder / "sample_output.tif"),
                    postprocessing=_postprocessing(model),
                )
            ],
            weights=weights,
            attachments=[bmz.FileDescr(source=folder / PAIRSCOPE_ATTACHMENT)],
            # a dict: pydantic validates it into bioimageio's Config at run time
            config={  # type: ignore[arg-type]
                "pairscope": {
                    "model_file_sha256": model.sha256,
                    "pairscope_version": _version(),
                    "info": info.model_dump(mode="json"),
                }
            },
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_zip = folder / "package.zip"
        save_bioimageio_package(descr, output_path=tmp_zip)
        out.write_bytes(tmp_zip.read_bytes())
    return out


def _package_name(name: str) -> str:
    """bioimage.io names allow letters, digits, spaces and ``_-()``, 5 to 128 of
    them: a short name ("cpp") becomes "pairscope cpp"."""
    clean = "".join(c if c.isalnum() or c in " _-()" else "-" for c in name).strip()
    if len(clean) < 5:
        clean = f"pairscope {clean}".strip()
    return clean[:128]


def _version() -> str:
    try:
        return importlib.metadata.version("pairscope")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
