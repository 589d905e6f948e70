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
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ._files import os_reason
from .errors import OutputError, PairscopeError
from .io import Run, open_run
from .io import layout as L

__all__ = ["OutputExistsError", "RestoreResult", "restore", "restore_run"]

logger = logging.getLogger(__name__)


class OutputExistsError(PairscopeError, FileExistsError):
    """The output folder already holds restored frames (never overwritten)."""


_RESTORERS: dict[Any, Any] = {}
#: suffix of restored files being written (an interrupted restore leaves only these)
PARTIAL = ".partial"


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
    alpha: float | None = None,
) -> RestoreResult:
    """Restore every low-dose frame of ``run`` into ``out`` (module doc).

    ``alpha``: also write each frame's trust interval at that risk level into
    ``restored.uncertainty.ome.tif``, calibrated on the run's own same-instant
    reference pairs (:func:`pairscope.trust._conformal.calibrate_on_run`; its
    held-out coverage goes to ``restore.json``).

    The model is checked against the run's rig model
    (:func:`pairscope.restore.check_model_for_rig`): refused
    (``RigMismatchError``, a ``ModelFileError``) for another binning or pixel size,
    each warning (photometry, camera model, a model trained on the demo camera, an
    unknown rig) logged once.  Refuses
    (:class:`OutputExistsError`) an ``out`` that already holds restored frames, and
    (:class:`~pairscope.errors.OutputError`) a second restore into the same ``out``
    while one runs.  Frames are written under ``.partial`` names and renamed once
    all are restored: an interrupted restore leaves nothing that blocks a rerun,
    and a model output of the wrong size or with NaN pixels
    (:class:`~pairscope.errors.RestorationError`) leaves nothing at all.
    """
    from ._files import OutputLock, make_parents, remove_empty
    from .restore import check_compatible, load_model, log_rig_check
    from .rig import rig_model_for_run

    run = run if isinstance(run, Run) else open_run(run)
    indices = run.with_lowdose()
    if not indices:
        raise ValueError(f"{run.path} has no low-dose frames to restore")
    if alpha is not None:
        from .trust._conformal import check_alpha

        check_alpha(alpha)
    low_px = run.records[indices[0]]["lowdose"].get("pixel_size_um")
    loaded = load_model(model)
    log_rig_check(loaded.info, rig_model_for_run(run), path=model, log=logger.warning)
    check_compatible(  # the frames' own pixel size, where the rig model has none
        loaded.info,
        expect_factor=run.factor,
        expect_pixel_size_um=low_px,
        path=model,
    )
    out = Path(out)
    tiff = out / L.PREDICTION_TIFF
    made = make_parents(tiff)  # the output folder, where it is new
    try:
        with OutputLock(tiff, what="pairscope restore"):
            if tiff.exists():
                raise OutputExistsError(
                    f"{tiff} already exists; choose another --out folder (restored "
                    "frames are never overwritten)"
                )
            return _restore_into(
                out, run, indices, loaded, model,
                device=device, progress=progress, tile=tile,
                self_ensemble=self_ensemble, on_frame=on_frame, alpha=alpha,
            )  # fmt: skip
    except BaseException:
        remove_empty(made)
        raise


def _restore_into(
    out: Path,
    run: Run,
    indices: list[int],
    loaded: Any,
    model: str | Path,
    *,
    device: str,
    progress: bool,
    tile: int | None,
    self_ensemble: bool,
    on_frame: Callable[[int], None] | None,
    alpha: float | None = None,
) -> RestoreResult:
    """:func:`restore_run` once the output is held: ``.partial`` files, renamed."""
    import time

    from ._progress import progress as progress_bar
    from .errors import RestorationError
    from .io import (
        PageFile,
        finalize_predictions,
        json_default,
        write_bounds,
        write_json,
    )
    from .restore import StreamingRestorer

    restorer = StreamingRestorer(
        loaded, device=device, tile=tile, self_ensemble=self_ensemble
    )
    t0 = time.perf_counter()
    intervals: Any = None
    done: dict[int, np.ndarray] = {}
    if alpha is not None:  # calibrated first: every frame then gets its interval
        from .trust._conformal import calibrate_on_run

        intervals, done = calibrate_on_run(
            run,
            None,
            alpha,
            lambda low: restorer.restore_now(low).astype(np.float32),
            progress=progress,
        )
    part_tiff = out / (L.PREDICTION_TIFF + PARTIAL)
    part_index = out / (L.PREDICTION_INDEX + PARTIAL)
    part_bounds = out / (L.UNCERTAINTY_TIFF + PARTIAL)
    pages = PageFile(part_tiff)  # replaces what an interrupted restore left
    bounds = PageFile(part_bounds) if intervals is not None else None
    try:
        with open(part_index, "w", encoding="utf-8") as index:
            bar = progress_bar(
                indices, desc="restoring", unit="frame", disable=not progress
            )
            pending: list[str] = []
            for n, i in enumerate(bar):
                rec = run.records[i]
                pair = run[i]
                assert pair.lowdose is not None
                try:
                    image = done.pop(i, None)
                    if image is None:
                        image = restorer.restore_now(pair.lowdose).astype(np.float32)
                except RestorationError as exc:
                    raise RestorationError(
                        f"{run.path}, pair {rec.get('pair', i)}: {exc}; nothing was "
                        "written"
                    ) from exc
                page = pages.write(image, None)
                line = {
                    "page": page,
                    "pair": int(rec.get("pair", i)),
                    "trigger_index": rec.get("trigger_index"),
                    "prediction": True,
                    "model_name": loaded.info.name,
                    "model_sha256": loaded.sha256,
                }
                if bounds is not None:  # calibrated above: every frame has one
                    line.update(write_bounds(bounds, intervals.interval(image)))
                pending.append(json.dumps(line) + "\n")
                if len(pending) == 16 or n == len(indices) - 1:
                    pages.sync()  # frames on disk before their index lines
                    if bounds is not None:
                        bounds.sync()
                    index.write("".join(pending))
                    index.flush()
                    os.fsync(index.fileno())
                    pending.clear()
                if on_frame is not None:
                    on_frame(n)
        pages.close()
        if bounds is not None:
            bounds.close()
        finalize_predictions(
            out,
            run.path,
            model_sha256=loaded.sha256,
            tiff_name=part_tiff.name,
            index_name=part_index.name,
            uncertainty_name=part_bounds.name,
        )
        if bounds is not None:
            part_bounds.replace(out / L.UNCERTAINTY_TIFF)
        part_index.replace(out / L.PREDICTION_INDEX)
        part_tiff.replace(out / L.PREDICTION_TIFF)  # last: its name says "complete"
    except BaseException as exc:
        pages.abort()
        if bounds is not None:
            bounds.abort()
        for leftover in (part_tiff, part_index, part_bounds):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, PairscopeError):
            raise OutputError(  # a full disk, a file-size limit: name the output
                f"Cannot write the restored frames into {out}: {os_reason(exc)}; "
                "nothing was kept (the run is unchanged). Free space, raise the limit "
                "or choose another --out, then run it again",
                errno=exc.errno,
            ) from exc
        raise
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
            **({"coverage": intervals.summary()} if intervals is not None else {}),
        },
    )
    return result
