"""The pairscope model file: safetensors weights plus one JSON metadata string.

A model file is a plain ``.safetensors`` file whose ``__metadata__`` holds one key,
``"pairscope"``, with the JSON dump of :class:`ModelInfo` (architecture, factor,
normalisation, pixel sizes, provenance, metrics, and the rig model of the runs it
was trained on).  Pickle-based checkpoints are refused and never unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import stat
import struct
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .._files import write_atomic
from ..rig import RigModel
from ._networks import (
    ARCHITECTURES,
    MAX_FACTOR,
    RestorationNet,
    build_network,
    check_params,
    expected_shapes,
)

__all__ = [
    "FORMAT_VERSION",
    "CameraModel",
    "LoadedModel",
    "ModelFileError",
    "ModelInfo",
    "NoiseFit",
    "Normalization",
    "PsfFit",
    "TrainedRun",
    "ValidationScores",
    "describe_model_file",
    "load_model",
    "model_sha256",
    "save_model",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
# format 1: no camera, noise fit, training or validation; format 2: no rig model
READABLE_VERSIONS = (1, 2, 3)
METADATA_KEY = "pairscope"
MAX_HEADER_BYTES = 16 * 1024 * 1024  # the JSON header; read only if within this
MAX_PARAMETERS = 64_000_000  # network parameters built from a file, at most
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def _pairscope_version() -> str:
    try:
        return importlib.metadata.version("pairscope")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class ModelFileError(ValueError):
    """A model file that pairscope refuses to load; the message names the fix."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(where + problem)


class Normalization(BaseModel):
    """How raw ADU map to the network's units: ``(x - low) / (high - low)``.

    ``mode="fixed"``: ``low`` and ``high`` are the ADU at percentiles ``p_low`` and
    ``p_high`` of the training data, used for every frame (consistent across
    frames).  ``mode="per_frame_percentile"``: ``low`` and ``high`` are taken from
    each frame's own percentiles (robust to dose changes); the stored ``low`` and
    ``high`` are then only informative.  The target must be ``"fixed"``: the
    restored frame is de-normalised with its ``low`` and ``high`` into reference ADU.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["fixed", "per_frame_percentile"] = "fixed"
    p_low: float = Field(1.0, ge=0, le=100)
    p_high: float = Field(99.8, ge=0, le=100)
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if not self.p_low < self.p_high:
            raise ValueError(f"need p_low < p_high, got {self.p_low} and {self.p_high}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low/high must be finite, got {self.low}, {self.high}")
        if not self.low < self.high:
            raise ValueError(f"need low < high (ADU), got {self.low} and {self.high}")
        return self

    def bounds(self, frame: np.ndarray) -> tuple[float, float]:
        """``(low, high)`` in ADU for ``frame`` (its percentiles in per-frame mode).

        Per-frame percentiles of frames above 2**18 pixels are taken on a regular
        subsample (stride ``s`` in both axes), which is fast and close to exact.
        """
        if self.mode == "fixed":
            return self.low, self.high
        s = max(1, int(math.sqrt(frame.size / 2**18)))
        lo, hi = np.percentile(frame[..., ::s, ::s], (self.p_low, self.p_high))
        lo, hi = float(lo), float(hi)
        return lo, (hi if hi > lo else lo + 1.0)

    @classmethod
    def from_data(
        cls, data: np.ndarray, *, p_low: float = 1.0, p_high: float = 99.8
    ) -> Normalization:
        """A fixed normalisation from the percentiles of ``data`` (e.g. a training set)."""
        lo, hi = np.percentile(data, (p_low, p_high))
        hi = hi if hi > lo else lo + 1.0
        return cls(
            mode="fixed", p_low=p_low, p_high=p_high, low=float(lo), high=float(hi)
        )


class TrainedRun(BaseModel):
    """One acquisition run a model was trained on, with its content hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str


class CameraModel(BaseModel):
    """A camera's offset, conversion gain (e-/ADU) and read noise: since format 3
    its rig model's photometry (None where unknown; files of format 2 took them
    from the device's properties)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera: str | None = None
    offset_adu: float | None = None
    gain_e_per_adu: float | None = Field(None, gt=0)
    read_noise_e: float | None = Field(None, ge=0)

    @classmethod
    def from_rig(cls, rig: RigModel, role: str) -> CameraModel:
        """The ``role`` camera of ``rig``: its label and photometry (None where
        unknown), never a device's ``Gain`` property."""
        cam = rig.camera(role)
        p = cam.photometry
        return cls(
            camera=cam.label or None,
            offset_adu=p.offset_adu,
            gain_e_per_adu=p.e_per_adu,
            read_noise_e=p.read_noise_e,
        )


class NoiseFit(BaseModel):
    """The photon-transfer fit of the low-dose camera (``pairscope.train.NoiseModel``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gain_e_per_adu: float
    offset_adu: float
    read_noise_e: float
    n_points: int = Field(0, ge=0)
    dose_ratio: float | None = None
    reference_gain_e_per_adu: float | None = None
    reference_offset_adu: float | None = None


class PsfFit(BaseModel):
    """The PSF measured on the training references (``pairscope.train.PsfModel``):
    a pixel-integrated Gaussian of ``sigma_px`` reference pixels, or of the width
    the optics give (``sigma_given``, ``--psf-sigma``) with the spots' brightness."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sigma_px: float = Field(gt=0)
    n_spots: int = Field(0, ge=0)
    peak_adu: float
    sigma_given: bool = False


class ValidationScores(BaseModel):
    """Scores of the stored weights on the held-out validation pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epoch: int = Field(ge=0)
    selected: Literal["best", "last"] = "best"
    val_loss: float
    psnr_db: float | None = None
    bicubic_psnr_db: float | None = None
    n_pairs: int = Field(0, ge=0)
    n_train_pairs: int = Field(0, ge=0)


class ModelInfo(BaseModel):
    """Everything a model file records besides its weights.

    ``training`` is the JSON form of the :class:`pairscope.train.TrainConfig` that
    made the model (with its ``version``); ``history`` one entry per epoch;
    ``rig_model`` the rig model of the (first) run it was trained on (None in files
    from before format 3: the rig is unknown).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str
    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    factor: int = Field(ge=1, le=MAX_FACTOR)
    input_norm: Normalization = Normalization()
    target_norm: Normalization = Normalization()
    lowdose_pixel_size_um: float | None = Field(None, gt=0)
    reference_pixel_size_um: float | None = Field(None, gt=0)
    trained_on: tuple[TrainedRun, ...] = ()
    metrics: dict[str, float] = Field(default_factory=dict)
    pairscope_version: str = Field(default_factory=_pairscope_version)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    lowdose_camera: CameraModel | None = None
    reference_camera: CameraModel | None = None
    noise_fit: NoiseFit | None = None
    psf_fit: PsfFit | None = None
    training: dict[str, Any] | None = None
    validation: ValidationScores | None = None
    history: tuple[dict[str, float], ...] = ()
    rig_model: RigModel | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelInfo:
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"arch {self.arch!r} is not one of {sorted(ARCHITECTURES)}"
            )
        if "factor" in self.params:
            raise ValueError("give the upscale factor as `factor`, not in `params`")
        check_params(self.arch, self.factor, self.params)
        if self.target_norm.mode != "fixed":
            raise ValueError(
                "target_norm.mode must be 'fixed': the output has no frame of its own "
                "to take percentiles from"
            )
        lo, ref = self.lowdose_pixel_size_um, self.reference_pixel_size_um
        if (
            lo is not None
            and ref is not None
            and not math.isclose(lo / ref, self.factor, rel_tol=0.05)
        ):
            raise ValueError(
                f"pixel sizes {lo} µm (low-dose) / {ref} µm (reference) = "
                f"{lo / ref:.3g}, but factor is {self.factor}: they must agree within 5%"
            )
        return self

    @classmethod
    def for_network(
        cls, network: RestorationNet, *, name: str, **fields: Any
    ) -> ModelInfo:
        """Metadata whose ``arch``, ``params`` and ``factor`` come from ``network``."""
        return cls(
            name=name,
            arch=network.arch,
            params=network.params,
            factor=network.factor,
            **fields,
        )

    def replace(self, **changes: Any) -> ModelInfo:
        """A validated copy with ``changes`` applied."""
        return type(self).model_validate({**self.model_dump(), **changes})


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A network in eval mode with its metadata and the file's SHA-256."""

    network: RestorationNet
    info: ModelInfo
    sha256: str
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.info.name


def model_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _serialize(network: RestorationNet, info: ModelInfo) -> bytes:
    if info.arch != network.arch or info.factor != network.factor:
        raise ValueError(
            f"info says {info.arch} ×{info.factor} but the network is "
            f"{network.arch} ×{network.factor}"
        )
    if info.params != network.params:
        raise ValueError(
            f"info.params {info.params} != network.params {network.params}"
        )
    tensors = {
        k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()
    }
    _check_finite(None, tensors)
    return st_save(tensors, metadata={METADATA_KEY: info.model_dump_json()})


def save_model(path: str | Path, network: RestorationNet, info: ModelInfo) -> str:
    """Write ``network``'s weights and ``info`` to ``path``; return its SHA-256.

    The file is written to a temporary name and renamed, so a crash never leaves
    a half-written model under ``path``.
    """
    path = Path(path)
    data = _serialize(network, info)
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


_CONVERT = (
    "this is a pickle-based checkpoint (torch.save .pt/.pth); pairscope never "
    "unpickles files, since unpickling can run arbitrary code. Convert it where you "
    "trust it: load it with torch.load, build the matching network with "
    "pairscope.restore.build_network, load_state_dict, and write it with "
    "pairscope.restore.save_model(path, network, info); or retrain with "
    "`pairscope train`"
)
_RESAVE = "re-save it with pairscope.restore.save_model"


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: object) -> bool:
    return type(value) is int  # bool and float are not offsets or sizes


def _check_entry(path: Path | None, name: str, entry: object) -> tuple[int, int]:
    """Check one tensor entry of the header; return its ``(begin, end)`` offsets."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(
            path,
            f"header entry {name!r} is {_type_name(entry)} {str(entry)[:40]}, not an "
            f"object with dtype, shape and data_offsets: corrupt file; {_RESAVE}",
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        raise ModelFileError(
            path,
            f"tensor {name!r} has dtype {dtype!r}; a model file holds only "
            f"{'/'.join(_DTYPE_BYTES)} weights; {_RESAVE}",
        )
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(_is_int(n) and 0 <= n < 2**32 for n in shape)
    ):
        raise ModelFileError(
            path,
            f"tensor {name!r} has shape {str(shape)[:40]}, not a list of at most 8 "
            f"non-negative integers: corrupt file; {_RESAVE}",
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise ModelFileError(
            path,
            f"tensor {name!r} has data_offsets {str(offsets)[:40]}, not two "
            f"increasing integers: corrupt file; {_RESAVE}",
        )
    size = math.prod(shape) * _DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != size:
        raise ModelFileError(
            path,
            f"tensor {name!r} declares shape {shape} {dtype} ({size} bytes) but "
            f"{offsets[1] - offsets[0]} bytes of data: corrupt file; {_RESAVE}",
        )
    return offsets[0], offsets[1]


def _check_header(path: Path | None, header: object) -> int:
    """Check every field of a parsed header; return the size of the data section."""
    if not isinstance(header, dict):
        raise ModelFileError(
            path,
            f"the header is a JSON {_type_name(header)}, not an object: not a "
            f"pairscope model file; {_RESAVE}",
        )
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(
            path,
            "header __metadata__ is not an object of strings: corrupt file; " + _RESAVE,
        )
    spans = sorted(
        _check_entry(path, k, v) for k, v in header.items() if k != "__metadata__"
    )
    end = 0
    for begin, stop in spans:
        if begin != end:
            raise ModelFileError(
                path,
                f"tensor data overlaps or leaves a gap at byte {end}: corrupt file; "
                + _RESAVE,
            )
        end = stop
    return end


def _read_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """The header and the whole file's bytes, each size checked before it is read.

    Only a regular file is opened; its 8-byte header length is bounded by
    :data:`MAX_HEADER_BYTES` and the file size, the header's entries are checked,
    and the data section is read only if the file has exactly the declared size.
    """
    try:  # non-blocking: opening a FIFO nobody writes to must not wait forever
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ModelFileError(path, f"cannot read model file: {e}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ModelFileError(
            path,
            "not a regular file (a device, pipe or folder); pass a .safetensors "
            "model file written by pairscope",
        )
    with os.fdopen(fd, "rb") as f:
        size = st.st_size
        head = f.read(8)
        if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[
            :4
        ] in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ModelFileError(path, _CONVERT)
        if len(head) < 8:
            raise ModelFileError(
                path,
                f"file is {len(head)} bytes, too short for a model file "
                "(truncated?): copy it again or re-save it with save_model",
            )
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER_BYTES:
            raise ModelFileError(
                path,
                f"not a safetensors file (its header length {n} is not within 1 byte "
                f"to {MAX_HEADER_BYTES >> 20} MiB); pairscope model files are written "
                "by pairscope.restore.save_model",
            )
        if size < 8 + n:
            raise ModelFileError(
                path,
                f"truncated: header needs {8 + n} bytes, file has {size}; copy "
                "the file again or re-save it with save_model",
            )
        raw = f.read(n)
        if raw[:1] != b"{":
            raise ModelFileError(
                path,
                "not a safetensors file (no JSON header); pairscope model files are "
                "written by pairscope.restore.save_model",
            )
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(
                path, f"corrupt safetensors header ({e}); {_RESAVE}"
            ) from e
        end = _check_header(path, header)
        if size != 8 + n + end:
            problem = "truncated" if size < 8 + n + end else "trailing data"
            raise ModelFileError(
                path,
                f"{problem}: the weights need {8 + n + end} bytes, file has {size}; "
                "copy the file again or re-save it with save_model",
            )
        data = head + raw + f.read(end)
    if len(data) != size:  # the file changed while it was read
        raise ModelFileError(path, "the file changed while being read; try again")
    return header, data


def _parse_info(path: Path | None, header: dict[str, Any]) -> ModelInfo:
    """The :class:`ModelInfo` of a checked header, every field strictly typed."""
    raw = header.get("__metadata__", {}).get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(
            path,
            "no pairscope metadata (__metadata__['pairscope'] is missing), so "
            "its architecture, factor and normalisation are unknown; write it with "
            "pairscope.restore.save_model(path, network, info)",
        )
    try:
        fields = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(
            path, f"invalid pairscope metadata ({e}); re-save it with save_model"
        ) from e
    if not isinstance(fields, dict):
        raise ModelFileError(
            path,
            f"invalid pairscope metadata (a JSON {_type_name(fields)}, not an "
            "object); re-save it with save_model",
        )
    version = fields.get("format_version")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise ModelFileError(
            path,
            f"model file format {version!r} is not supported (this pairscope reads "
            f"formats {', '.join(map(str, READABLE_VERSIONS))}); update pairscope or "
            "re-save the model",
        )
    try:
        return ModelInfo.model_validate_json(raw, strict=True)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'metadata'}: {err['msg']}"
            for err in e.errors()
        )
        raise ModelFileError(
            path, f"invalid pairscope metadata ({problems}); re-save it with save_model"
        ) from None


def _check_weights(path: Path | None, info: ModelInfo, header: dict[str, Any]) -> None:
    """The weights the header declares must be exactly the network's, and small."""
    expected = expected_shapes(info.arch, info.factor, info.params)
    n_params = sum(math.prod(s) for s in expected.values())
    what = f"{info.arch} {info.params} ×{info.factor}"
    if n_params > MAX_PARAMETERS:
        raise ModelFileError(
            path,
            f"the metadata describes a {what} network of {n_params:,} parameters, "
            f"more than pairscope builds from a file ({MAX_PARAMETERS:,}); {_RESAVE}",
        )
    declared = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(declared))
    extra = sorted(set(declared) - set(expected))
    wrong = sorted(
        k for k in expected.keys() & declared.keys() if expected[k] != declared[k]
    )
    if missing or extra or wrong:
        detail = (
            f"missing {missing[:3]}" if missing
            else f"unexpected {extra[:3]}" if extra
            else f"{wrong[0]} is {list(declared[wrong[0]])}, expected "
            f"{list(expected[wrong[0]])}"
        )  # fmt: skip
        raise ModelFileError(
            path,
            f"weights do not fit the {what} network the metadata describes "
            f"({detail}); {_RESAVE}",
        )


def _check_finite(path: Path | None, tensors: dict[str, Any]) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(t.isfinite().all()):
            bad = int((~t.isfinite()).sum())
            raise ModelFileError(
                path,
                f"weights are not finite ({bad} NaN/inf values in {name!r}): the "
                "training diverged or the file is damaged; retrain or use another "
                "model",
            )


def check_compatible(
    info: ModelInfo,
    *,
    expect_factor: int | None = None,
    expect_pixel_size_um: float | None = None,
    rtol: float = 0.05,
    path: str | Path | None = None,
) -> None:
    """Raise :class:`ModelFileError` if ``info`` does not fit the acquisition.

    ``expect_factor`` is the acquisition's binning ratio; ``expect_pixel_size_um``
    its low-dose (input) pixel size, compared with relative tolerance ``rtol``.
    """
    if expect_factor is not None and info.factor != expect_factor:
        raise ModelFileError(
            path,
            f"model {info.name!r} restores ×{info.factor} but the acquisition "
            f"bins ×{expect_factor}: choose a model trained for binning "
            f"{expect_factor} or pass --binning {info.factor}",
        )
    if expect_pixel_size_um is None:
        return
    have = info.lowdose_pixel_size_um
    if have is None:
        logger.info("model %r records no pixel size; not checked", info.name)
        return
    if not math.isclose(have, expect_pixel_size_um, rel_tol=rtol):
        raise ModelFileError(
            path,
            f"model {info.name!r} was trained on {have:g} µm low-dose pixels but "
            f"the acquisition has {expect_pixel_size_um:g} µm (beyond "
            f"{rtol:.0%} tolerance): choose a model trained at this pixel size "
            "(objective / binning), or retrain on data from this set-up",
        )


def load_model(
    path: str | Path,
    *,
    expect_factor: int | None = None,
    expect_pixel_size_um: float | None = None,
    rtol: float = 0.05,
) -> LoadedModel:
    """Load a model file written by :func:`save_model`, network in eval mode.

    Everything is checked before it is trusted, each refusal a one-line
    :class:`ModelFileError` naming the file: pickle checkpoints (never unpickled),
    files that are not regular, a header longer than :data:`MAX_HEADER_BYTES`
    (checked before reading it), the type of every header and metadata field,
    truncated or padded files, a network larger than :data:`MAX_PARAMETERS` or not
    matching the declared weight shapes (checked before building it), non-finite
    weights, and (see :func:`check_compatible`) a factor or pixel size that does
    not match the acquisition.  A bioimage.io package written by ``pairscope
    export`` (.zip) is read as ``pairscope import-model`` reads it, with the same
    checks, and its model file's SHA-256.
    """
    path = Path(path)
    if is_bioimageio_package(path):
        return _load_package(path, expect_factor, expect_pixel_size_um, rtol)
    header, data = _read_file(path)
    info = _parse_info(path, header)
    check_compatible(
        info,
        expect_factor=expect_factor,
        expect_pixel_size_um=expect_pixel_size_um,
        rtol=rtol,
        path=path,
    )
    _check_weights(path, info, header)
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors' own checks, after ours
        raise ModelFileError(path, f"corrupt weights ({e}); {_RESAVE}") from None
    _check_finite(path, tensors)
    network = build_network(info.arch, factor=info.factor, **info.params)
    network.load_state_dict(tensors, strict=True)
    network.eval().requires_grad_(False)
    return LoadedModel(network, info, hashlib.sha256(data).hexdigest(), path)


def is_bioimageio_package(path: Path) -> bool:
    """Whether ``path`` is a zip holding a bioimage.io description (``rdf.yaml``
    or ``bioimageio.yaml``), as ``pairscope export`` writes; only the zip's
    directory is read."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names & {"rdf.yaml", "bioimageio.yaml"})


def _load_package(
    path: Path,
    expect_factor: int | None,
    expect_pixel_size_um: float | None,
    rtol: float,
) -> LoadedModel:
    from pairscope.bioimageio import import_bioimageio

    model = import_bioimageio(path)
    check_compatible(
        model.info,
        expect_factor=expect_factor,
        expect_pixel_size_um=expect_pixel_size_um,
        rtol=rtol,
        path=path,
    )
    return LoadedModel(model.network, model.info, model.sha256, path)


def as_loaded(
    model: LoadedModel | str | Path, *, expect_factor: int | None = None
) -> LoadedModel:
    """Pass a :class:`LoadedModel` through, or load one from a path."""
    if isinstance(model, LoadedModel):
        check_compatible(model.info, expect_factor=expect_factor, path=model.path)
        return model
    return load_model(model, expect_factor=expect_factor)


def loaded_from_network(network: RestorationNet, info: ModelInfo) -> LoadedModel:
    """Wrap an in-memory network (not saved) as a :class:`LoadedModel`.

    Its ``sha256`` is the hash of the bytes :func:`save_model` would write.
    """
    data = _serialize(network, info)
    network.eval().requires_grad_(False)
    return LoadedModel(network, info, hashlib.sha256(data).hexdigest())


def _fmt(value: float | None, spec: str = ".4g", unit: str = "") -> str:
    return "unknown" if value is None else f"{value:{spec}}{unit}"


def describe_rig(rig: RigModel | None) -> list[str]:
    """One or two lines for the rig a model was trained on (``pairscope info``)."""
    if rig is None:
        return [
            "rig:          not recorded (made before pairscope recorded it, or saved "
            "without it): its cameras and photometry are unknown"
        ]

    def camera(role: str, name: str) -> str:
        cam = rig.camera(role)
        return (
            f"{name} {cam.label or '?'} ({cam.camera_model or 'model unknown'}, "
            f"{_fmt(cam.pixel_size_um, 'g', ' µm')}, binning {cam.binning})"
        )

    def photometry(role: str, name: str) -> str:
        p = rig.camera(role).photometry
        if not p.known:
            return f"{name} unknown"
        return f"{name} {p.e_per_adu:.4g} e-/ADU, offset {p.offset_adu:.4g} ADU ({p.source})"

    return [
        f"rig:          {rig.rig} ×{rig.factor} ({rig.mode}): "
        + camera("lowdose", "low-dose")
        + "; "
        + camera("reference", "reference"),
        "photometry:   "
        + photometry("lowdose", "low-dose")
        + "; "
        + photometry("reference", "reference"),
    ]


def describe_model_file(path: str | Path) -> str:
    """A human-readable account of a model file: everything it records.

    Architecture, normalisation, pixel sizes, the camera models, the noise fit,
    the training configuration, the validation scores, the rig and the runs it was
    trained on.  The file is checked exactly as :func:`load_model` does.
    """
    loaded = load_model(path)
    info = loaded.info
    n_params = sum(p.numel() for p in loaded.network.parameters())
    lines = [f"model:        {info.name}  ({Path(path)})"]
    if is_bioimageio_package(Path(path)):
        lines.append(
            "package:      bioimage.io, from pairscope export (pairscope import-model "
            "extracts the model file)"
        )
    lines += [
        f"sha256:       {loaded.sha256}",
        f"format:       {info.format_version} (pairscope {info.pairscope_version}, "
        f"created {info.created:%Y-%m-%d %H:%M} UTC)",
        f"network:      {info.arch} {info.params}, ×{info.factor} upscaling, "
        f"{n_params:,} parameters",
        f"pixel size:   low-dose {_fmt(info.lowdose_pixel_size_um, 'g', ' µm')}, "
        f"reference {_fmt(info.reference_pixel_size_um, 'g', ' µm')}",
    ]
    for role, norm in (("input", info.input_norm), ("target", info.target_norm)):
        lines.append(
            f"{role + ' norm:':<14}{norm.mode}, ADU {norm.low:.1f} .. {norm.high:.1f} "
            f"(percentiles {norm.p_low:g} / {norm.p_high:g})"
        )
    lines += describe_rig(info.rig_model)
    for role, cam in (
        ("low-dose cam:", info.lowdose_camera),
        ("ref. camera:", info.reference_camera),
    ):
        if cam is None:
            lines.append(f"{role:<14}not recorded")
        else:
            lines.append(
                f"{role:<14}{cam.camera or '?'}: offset "
                f"{_fmt(cam.offset_adu, '.1f', ' ADU')}, gain "
                f"{_fmt(cam.gain_e_per_adu, '.3g', ' e-/ADU')}, read noise "
                f"{_fmt(cam.read_noise_e, '.3g', ' e-')}"
            )
    nf = info.noise_fit
    lines.append(
        "noise fit:    not recorded"
        if nf is None
        else f"noise fit:    gain {nf.gain_e_per_adu:.4g} e-/ADU, offset "
        f"{nf.offset_adu:.2f} ADU, read noise {nf.read_noise_e:.3g} e-, dose ratio "
        f"{_fmt(nf.dose_ratio)} ({nf.n_points:,} pixels)"
    )
    psf = info.psf_fit
    if psf is not None:
        um = info.reference_pixel_size_um
        lines.append(
            f"PSF fit:      sigma {psf.sigma_px:.3g} reference px"
            + ("" if um is None else f" ({psf.sigma_px * um * 1000:.0f} nm)")
            + (" given (--psf-sigma); peaks" if psf.sigma_given else "")
            + f" from {psf.n_spots} isolated spots"
        )
    val = info.validation
    if val is None:
        lines.append("validation:   not recorded")
    else:
        lines.append(
            f"validation:   {val.selected} epoch {val.epoch}: loss {val.val_loss:.5g}, "
            f"PSNR {_fmt(val.psnr_db, '.2f', ' dB')} vs bicubic "
            f"{_fmt(val.bicubic_psnr_db, '.2f', ' dB')} on {val.n_pairs} held-out "
            f"pairs ({val.n_train_pairs} training pairs)"
        )
    if info.metrics:
        lines.append(
            "metrics:      "
            + ", ".join(f"{k} {v:.5g}" for k, v in sorted(info.metrics.items()))
        )
    if info.training is None:
        lines.append("training:     configuration not recorded")
    else:
        lines.append("training:     " + ", ".join(
            f"{k}={v}" for k, v in info.training.items() if v is not None
        ))  # fmt: skip
    for run in info.trained_on:
        lines.append(f"trained on:   {run.path} (manifest sha256 {run.sha256[:12]}…)")
    return "\n".join(lines)
