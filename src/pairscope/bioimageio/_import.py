"""Import a bioimage.io package written by :func:`export_bioimageio`.

Nothing in the package is unpickled or executed: the zip's members are size
checked and read into memory (never extracted), ``rdf.yaml`` is parsed with
``yaml.safe_load``, the embedded pairscope model file goes through every check
of :func:`pairscope.restore.load_model`, and the package's ``pytorch_state_dict``
weights (read with ``weights_only=True``) must equal it, so a package whose
weights were changed after export is refused.
"""

from __future__ import annotations

import io
import stat
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from pairscope._files import write_atomic
from pairscope.restore import LoadedModel, ModelFileError, load_model

from ._export import PAIRSCOPE_ATTACHMENT

__all__ = ["import_bioimageio"]

_MAX_PACKAGE = 4 * 1024**3
_MAX_RDF = 4 * 1024**2
_MAX_MEMBER = 1024**3


def _member(path: Path, zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelFileError(path, f"the package has no {name}") from None
    if info.file_size > limit:
        raise ModelFileError(
            path, f"{name} declares {info.file_size} bytes, more than {limit}"
        )
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelFileError(path, f"{name} is larger than it declares")
    return data


def _rdf(path: Path, zf: zipfile.ZipFile) -> dict[str, Any]:
    names = set(zf.namelist())
    name = next((n for n in ("rdf.yaml", "bioimageio.yaml") if n in names), None)
    if name is None:
        raise ModelFileError(
            path, "not a bioimage.io package (no rdf.yaml / bioimageio.yaml)"
        )
    try:
        rdf = yaml.safe_load(_member(path, zf, name, _MAX_RDF))
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ModelFileError(path, f"{name} is not valid YAML ({first})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ModelFileError(path, f"{name} does not describe a model")
    version = str(rdf.get("format_version", ""))
    if not version.startswith("0.5."):
        raise ModelFileError(
            path, f"model spec {version or 'unknown'} is not supported (need 0.5.x)"
        )
    return rdf


def _attachment(path: Path, rdf: dict[str, Any]) -> str:
    for item in rdf.get("attachments") or []:
        source = item.get("source") if isinstance(item, dict) else None
        if (
            isinstance(source, str)
            and source.rsplit("/", 1)[-1] == PAIRSCOPE_ATTACHMENT
        ):
            return source
    raise ModelFileError(
        path,
        f"not exported by pairscope (no {PAIRSCOPE_ATTACHMENT} attachment), so its "
        "camera, normalisation and provenance are unknown: pairscope imports only "
        "packages written by `pairscope export`",
    )


def _check_state_dict(
    path: Path, zf: zipfile.ZipFile, rdf: dict[str, Any], model: LoadedModel
) -> None:
    weights = (rdf.get("weights") or {}).get("pytorch_state_dict")
    source = weights.get("source") if isinstance(weights, dict) else None
    if not isinstance(source, str):
        raise ModelFileError(path, "the package has no pytorch_state_dict weights")
    data = _member(path, zf, source, _MAX_MEMBER)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # a refused pickle or a damaged member
        raise ModelFileError(
            path, f"{source} is not a plain tensor state dict (never unpickled)"
        ) from None
    mine = model.network.state_dict()
    if not isinstance(state, dict) or set(state) != set(mine):
        raise ModelFileError(
            path, f"{source} does not hold the weights of {PAIRSCOPE_ATTACHMENT}"
        )
    for k, v in mine.items():
        other = state[k]
        if not isinstance(other, torch.Tensor) or not torch.equal(other, v):
            raise ModelFileError(
                path,
                f"{source} differs from {PAIRSCOPE_ATTACHMENT} at {k!r}: the package "
                "was changed after export; export it again",
            )


def import_bioimageio(
    package: str | Path, out: str | Path | None = None, *, force: bool = False
) -> LoadedModel:
    """Check a bioimage.io package from ``pairscope export`` and load its model.

    With ``out``, also write the model file there (refused if it exists, unless
    ``force``).  Every refusal is a one-line :class:`ModelFileError`.
    """
    path = Path(package)
    try:
        st = path.stat()
    except OSError as e:
        raise ModelFileError(path, f"cannot read the package: {e}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_PACKAGE:
        raise ModelFileError(path, "not a regular file of at most 4 GiB")
    if out is not None and Path(out).exists() and not force:
        raise ValueError(f"{out} exists: pass --force to overwrite it")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise ModelFileError(
            path, "not a zip file (a bioimage.io package is one)"
        ) from None
    with zf:
        rdf = _rdf(path, zf)
        data = _member(path, zf, _attachment(path, rdf), _MAX_MEMBER)
        with tempfile.TemporaryDirectory() as tmp:
            inner = Path(tmp) / PAIRSCOPE_ATTACHMENT
            inner.write_bytes(data)
            try:
                model = load_model(inner)
            except ModelFileError as e:
                raise ModelFileError(
                    path, f"{PAIRSCOPE_ATTACHMENT}: {e.problem}"
                ) from None
        expected = ((rdf.get("config") or {}).get("pairscope") or {}).get(
            "model_file_sha256"
        )
        if expected != model.sha256:
            raise ModelFileError(
                path,
                f"{PAIRSCOPE_ATTACHMENT} is not the model file the package was "
                "exported with (sha256 differs): export it again",
            )
        _check_state_dict(path, zf, rdf, model)
    if out is not None:
        write_atomic(Path(out), data)
        model = LoadedModel(model.network, model.info, model.sha256, Path(out))
    return model
