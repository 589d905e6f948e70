"""Restore frames after the fact: one frame (:func:`restore`) or a whole run.

``restore(model, frame)`` applies the model's own normalisation (stored in the model
file) and returns the restored frame in reference ADU, on the reference grid.
:func:`restore_run` restores every low-dose frame of a run folder into
``restored.prediction.ome.tif`` (OME-XML with the reference grid's pixel size, one
plane per pair on the low-dose data's axes, marked as predictions with the model's
SHA-256) plus ``restored.jsonl`` and ``restore.json``.  GPU when there is one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PairscopeError
from .io import Run, open_run
from .io import _layout as L

__all__ = ["OutputExistsError", "RestoreResult", "restore", "restore_run"]


class OutputExistsError(PairscopeError, FileExistsError):
    """The output folder already holds restored frames (never overwritten)."""


_RESTORERS: dict[Any, Any] = {}


def _restorer(model: Any, device: str, self_ensemble: bool) -> Any:
    """A cached :class:`pairscope.restore.StreamingRestorer` for ``model``."""
    from .restore import LoadedModel, StreamingRestorer, load_model

    if isinstance(model, LoadedModel):
        key: Any = (id(model), device, self_ensemble)
    else:
        path = Path(model)
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, device, self_ensemble)
    if key not in _RESTORERS:
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        if len(_RESTORERS) >= 4:
            _RESTORERS.pop(next(iter(_RESTORERS)))
        _RESTORERS[key] = (
            StreamingRestorer(loaded, device=device, self_ensemble=self_ensemble),
            loaded,
        )
    return _RESTORERS[key][0]


def restore(
    model: Any,
    frame: np.ndarray,
    *,
    device: str = "auto",
    self_ensemble: bool = False,
) -> np.ndarray:
    """Restore one low-dose ``frame`` (2-D, ADU) with ``model`` (a path or loaded).

    The model's input normalisation is applied, the output is de-normalised into
    reference ADU (float32), ``factor`` times larger per axis.  ``self_ensemble``
    averages the restorations of the frame's eight flips and quarter turns (8x the
    work).  Models are loaded once and cached.
    """
    return _restorer(model, device, self_ensemble).restore_now(np.asarray(frame))


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """Where the predictions went and what made them."""

    out: Path
    frames: int
    model_sha256: str
    model_name: str
    device: str
    seconds: float
    self_ensemble: bool = False


def restore_run(
    model: str | Path,
    run: str | Path | Run,
    out: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    tile: int | None = None,
    self_ensemble: bool = False,
    on_frame: Callable[[int], None] | None = None,
) -> RestoreResult:
    """Restore every low-dose frame of ``run`` into ``out`` (module doc).

    Refuses (``ModelFileError``) a model for another binning or pixel size, and
    (:class:`OutputExistsError`) an ``out`` that already holds restored frames.
    """
    import time

    from ._progress import progress as progress_bar
    from .io._finalize import json_default, write_json
    from .io._predictions import finalize_predictions
    from .io._writer import _PageFile
    from .restore import StreamingRestorer, load_model

    run = run if isinstance(run, Run) else open_run(run)
    indices = run.with_lowdose()
    if not indices:
        raise ValueError(f"{run.path} has no low-dose frames to restore")
    low_px = run.records[indices[0]]["lowdose"].get("pixel_size_um")
    loaded = load_model(model, expect_factor=run.factor, expect_pixel_size_um=low_px)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tiff = out / L.PREDICTION_TIFF
    if tiff.exists():
        raise OutputExistsError(
            f"{tiff} already exists; choose another --out folder (restored frames "
            "are never overwritten)"
        )
    restorer = StreamingRestorer(
        loaded, device=device, tile=tile, self_ensemble=self_ensemble
    )
    t0 = time.perf_counter()
    pages = _PageFile(tiff)
    try:
        with open(out / L.PREDICTION_INDEX, "w", encoding="utf-8") as index:
            bar = progress_bar(
                indices, desc="restoring", unit="frame", disable=not progress
            )
            pending: list[str] = []
            for n, i in enumerate(bar):
                rec = run.records[i]
                pair = run[i]
                assert pair.lowdose is not None
                image = restorer.restore_now(pair.lowdose).astype(np.float32)
                page = pages.write(image, None)
                line = {
                    "page": page,
                    "pair": int(rec.get("pair", i)),
                    "trigger_index": rec.get("trigger_index"),
                    "prediction": True,
                    "model_name": loaded.info.name,
                    "model_sha256": loaded.sha256,
                }
                pending.append(json.dumps(line) + "\n")
                if len(pending) == 16 or n == len(indices) - 1:
                    pages.sync()  # frames on disk before their index lines
                    index.write("".join(pending))
                    index.flush()
                    os.fsync(index.fileno())
                    pending.clear()
                if on_frame is not None:
                    on_frame(n)
        pages.close()
    except BaseException:
        pages.abort()
        raise
    finalize_predictions(out, run.path, model_sha256=loaded.sha256)
    result = RestoreResult(
        out=out,
        frames=len(indices),
        model_sha256=loaded.sha256,
        model_name=loaded.info.name,
        device=str(restorer.device),
        seconds=round(time.perf_counter() - t0, 3),
        self_ensemble=self_ensemble,
    )
    write_json(
        out / "restore.json",
        {
            **json.loads(json.dumps(asdict(result), default=json_default)),
            "model": str(Path(model)),
            "run": str(run.path.resolve()),
            "prediction": True,
            "created": datetime.now().isoformat(),
        },
    )
    return result
