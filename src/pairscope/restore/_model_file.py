"""The pairscope model file: safetensors weights plus one JSON metadata string.

A model file is a plain ``.safetensors`` file whose ``__metadata__`` holds one key,
``"pairscope"``, with the JSON dump of :class:`ModelInfo` (architecture, factor,
normalisation, pixel sizes, provenance, metrics).  Pickle-based checkpoints are
refused and never unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .._files import write_atomic
from ._networks import ARCHITECTURES, RestorationNet, build_network

__all__ = [
    "FORMAT_VERSION",
    "LoadedModel",
    "ModelFileError",
    "ModelInfo",
    "Normalization",
    "TrainedRun",
    "load_model",
    "model_sha256",
    "save_model",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = "pairscope"
_MAX_HEADER = 100 * 1024 * 1024


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


class ModelInfo(BaseModel):
    """Everything a model file records besides its weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str
    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    factor: int = Field(ge=1)
    input_norm: Normalization = Normalization()
    target_norm: Normalization = Normalization()
    lowdose_pixel_size_um: float | None = Field(None, gt=0)
    reference_pixel_size_um: float | None = Field(None, gt=0)
    trained_on: tuple[TrainedRun, ...] = ()
    metrics: dict[str, float] = Field(default_factory=dict)
    pairscope_version: str = Field(default_factory=_pairscope_version)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _check(self) -> ModelInfo:
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"arch {self.arch!r} is not one of {sorted(ARCHITECTURES)}"
            )
        if "factor" in self.params:
            raise ValueError("give the upscale factor as `factor`, not in `params`")
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


def _parse_header(path: Path | None, data: bytes) -> dict[str, Any]:
    """Validate the safetensors framing of ``data`` and return its JSON header."""
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] in (
        b"PK\x03\x04",
        b"PK\x05\x06",
    ):
        raise ModelFileError(path, _CONVERT)
    if len(data) < 8:
        raise ModelFileError(
            path,
            f"file is {len(data)} bytes, too short for a model file "
            "(truncated?): copy it again or re-save it with save_model",
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or not data[8:9] == b"{":
        raise ModelFileError(
            path,
            "not a safetensors file (no JSON header); pairscope model files are "
            "written by pairscope.restore.save_model",
        )
    if len(data) < 8 + n:
        raise ModelFileError(
            path,
            f"truncated: header needs {8 + n} bytes, file has {len(data)}; copy "
            "the file again or re-save it with save_model",
        )
    try:
        header: dict[str, Any] = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(
            path, f"corrupt safetensors header ({e}); re-save it"
        ) from e
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
        default=0,
    )
    if len(data) < 8 + n + end:
        raise ModelFileError(
            path,
            f"truncated: the weights need {8 + n + end} bytes, file has "
            f"{len(data)}; copy the file again or re-save it with save_model",
        )
    return header


def _parse_info(path: Path | None, header: dict[str, Any]) -> ModelInfo:
    meta = header.get("__metadata__") or {}
    raw = meta.get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(
            path,
            "no pairscope metadata (__metadata__['pairscope'] is missing), so "
            "its architecture, factor and normalisation are unknown; write it with "
            "pairscope.restore.save_model(path, network, info)",
        )
    try:
        fields = json.loads(raw)
        version = fields.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(
                path,
                f"model file format {version!r} is not supported (this "
                f"pairscope reads format {FORMAT_VERSION}); update pairscope or "
                "re-save the model",
            )
        return ModelInfo.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'metadata'}: {err['msg']}"
            for err in e.errors()
        )
        raise ModelFileError(
            path, f"invalid pairscope metadata ({problems}); re-save it with save_model"
        ) from e
    except (json.JSONDecodeError, AttributeError) as e:
        raise ModelFileError(
            path, f"invalid pairscope metadata ({e}); re-save it with save_model"
        ) from e


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

    Raises :class:`ModelFileError` for pickle checkpoints (never unpickled),
    truncated or foreign files, missing or invalid metadata, weights that do not
    fit the architecture, and (see :func:`check_compatible`) a factor or pixel
    size that does not match the acquisition.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(path, f"cannot read model file: {e}") from e
    header = _parse_header(path, data)
    info = _parse_info(path, header)
    check_compatible(
        info,
        expect_factor=expect_factor,
        expect_pixel_size_um=expect_pixel_size_um,
        rtol=rtol,
        path=path,
    )
    try:
        tensors = st_load(data)
        network = build_network(info.arch, factor=info.factor, **info.params)
        network.load_state_dict(tensors, strict=True)
    except Exception as e:  # safetensors and torch raise several types
        raise ModelFileError(
            path,
            f"weights do not load into {info.arch} {info.params} ×{info.factor}: "
            f"{e}; re-save the model with save_model",
        ) from e
    network.eval().requires_grad_(False)
    return LoadedModel(network, info, hashlib.sha256(data).hexdigest(), path)


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
