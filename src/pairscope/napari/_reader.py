"""Open a run folder as napari layers: low-dose, reference, and restored if present.

World coordinates are µm on the reference camera's grid; time is the pair index.
The stored camera registration (``calibration.json``, convention in
:mod:`pairscope.io.calibration`) places the low-dose layer: its binned pixel ``j``
covers unbinned pixels ``f·j … f·j+f-1`` (centre ``f·j + (f-1)/2``), which see
reference pixel ``c + s·(p - c) + shift``; so the layer's scale is
``ref_px · s · f`` and its translate ``ref_px · (c·(1-s) + s·(f-1)/2 + shift)``.
Restored frames live on the low-dose camera's unbinned grid (scale ``ref_px · s``,
translate ``ref_px · (c·(1-s) + shift)``).  Sparse references (every N-th pair)
get a time scale of N, so each reference sits at its own pair.

Every layer carries its axes' names and units (``pair``, ``y``, ``x``; pixel, µm,
µm) for napari >= 0.5, so its scale bar reads µm; older napari gets neither.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..io import Run, open_run
from ..io import layout as L
from ..io.calibration import Registration, load_registration

LayerData = tuple[Any, dict[str, Any], str]

AXIS_LABELS = ("pair", "y", "x")
#: napari units (pint names) of the axes: the pair index has none ("pixel" is
#: napari's own default), the spatial axes are in µm
UNITS = ("pixel", "µm", "µm")


def _napari_has_units() -> bool:
    """Whether the installed napari takes ``units`` and ``axis_labels`` (>= 0.5);
    without napari (tests, other npe2 hosts) the layers carry them."""
    try:
        found = re.match(r"(\d+)\.(\d+)", version("napari"))
    except PackageNotFoundError:
        return True
    return found is None or (int(found[1]), int(found[2])) >= (0, 5)


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: a reader for a run folder (or a restore output), else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = _run_of_store(Path(path))
    if p.is_dir() and ((p / L.MANIFEST).is_file() or (p / "restore.json").is_file()):
        return read_run
    return None


def _run_of_store(path: Path) -> Path:
    """The run folder of an OME-Zarr run's store (``run.ome.zarr``, what a user
    drops on napari as "the zarr"), else ``path``."""
    if path.name == L.ZARR_STORE and (path.parent / L.MANIFEST).is_file():
        return path.parent
    return path


def read_run(path: str | list[str]) -> list[LayerData]:
    """Layer data tuples ``(data, kwargs, "image")`` for the run at ``path`` (a run
    folder, its OME-Zarr store, or a ``pairscope restore`` output folder)."""
    folder = _run_of_store(Path(path[0] if isinstance(path, list) else path))
    restored_dir = None
    if not (folder / L.MANIFEST).is_file():  # a `pairscope restore --out` folder
        restored_dir = folder
        folder = Path(json.loads((folder / "restore.json").read_text())["run"])
    elif (folder / L.PREDICTION_TIFF).is_file():
        restored_dir = folder
    run = open_run(folder)
    try:
        return _layers(run, restored_dir)
    finally:
        run.close()


def _layers(run: Run, restored_dir: Path | None) -> list[LayerData]:
    reg = load_registration(run) or Registration()
    f = run.factor
    low_idx = run.with_lowdose()
    ref_idx = [i for i, r in enumerate(run.records) if r.get("reference")]
    ref_px = _pixel(run, ref_idx, "reference")
    low_px = _pixel(run, low_idx, "lowdose")
    if ref_px is None and low_px is not None:
        ref_px = low_px / f
    ref_px = ref_px or 1.0
    layers: list[LayerData] = []
    if low_idx:
        data, t_scale, t0 = _stack(run, low_idx, "lowdose")
        c = _centre(data.shape[-2:], f)
        s = reg.scale
        translate = [
            ref_px * (c[k] * (1 - s) + s * (f - 1) / 2 + sh)
            for k, sh in enumerate((reg.shift_y_px, reg.shift_x_px))
        ]
        layers.append(
            _layer(
                data,
                "low-dose",
                (t_scale, ref_px * s * f, ref_px * s * f),
                (t0, *translate),
                run,
                reg,
                colormap="gray",
            )
        )
    if ref_idx:
        data, t_scale, t0 = _stack(run, ref_idx, "reference")
        layers.append(
            _layer(
                data,
                "reference",
                (t_scale, ref_px, ref_px),
                (t0, 0.0, 0.0),
                run,
                reg,
                colormap="gray",
                blending="additive",
            )
        )
    if restored_dir is None:
        return layers
    for width, name, style in (
        (False, "restored (prediction)", {"colormap": "magenta"}),
        (True, _width_name(restored_dir), {"colormap": "viridis", "visible": False}),
    ):
        restored = _restored(run, restored_dir, width=width)
        if restored is None:
            continue
        data, t_scale, t0 = restored
        c = _centre(data.shape[-2:], 1)
        s = reg.scale
        translate = [
            ref_px * (c[k] * (1 - s) + sh)
            for k, sh in enumerate((reg.shift_y_px, reg.shift_x_px))
        ]
        layers.append(
            _layer(
                data,
                name,
                (t_scale, ref_px * s, ref_px * s),
                (t0, *translate),
                run,
                reg,
                blending="additive",
                **style,
            )
        )
    return layers


def _width_name(folder: Path) -> str:
    """The interval-width layer's name, with the risk level it was made at."""
    index_path = folder / L.PREDICTION_INDEX
    for line in index_path.read_text().splitlines() if index_path.is_file() else []:
        alpha = json.loads(line).get("alpha") if line.strip() else None
        if alpha is not None:
            return f"interval width (alpha {alpha:g})"
    return "interval width"


def _centre(shape: tuple[int, ...], f: int) -> tuple[float, float]:
    """Centre of the reference-size grid, in reference pixels."""
    return ((shape[0] * f - 1) / 2, (shape[1] * f - 1) / 2)


def _pixel(run: Run, idx: list[int], role: str) -> float | None:
    for i in idx[:1]:
        v = run.records[i][role].get("pixel_size_um")
        return float(v) if v else None
    return None


def _time_axis(pairs: list[int]) -> tuple[list[int], float, float]:
    """Pair indices as a regular time axis ``(slots, scale, start)``.

    Regularly spaced pairs (sparse references) get ``scale = step``; otherwise
    every pair from the first to the last gets a slot (missing ones stay empty).
    """
    if len(pairs) > 1:
        steps = np.diff(pairs)
        if np.all(steps == steps[0]) and steps[0] > 0:
            return list(range(len(pairs))), float(steps[0]), float(pairs[0])
        return [p - pairs[0] for p in pairs], 1.0, float(pairs[0])
    return [0], 1.0, float(pairs[0]) if pairs else 0.0


def _stack(run: Run, idx: list[int], role: str) -> tuple[np.ndarray, float, float]:
    pairs = [int(run.records[i].get("pair", i)) for i in idx]
    slots, t_scale, t0 = _time_axis(pairs)
    first = run[idx[0]]
    shape = getattr(first, role).shape
    data = np.zeros((slots[-1] + 1, *shape), dtype=getattr(first, role).dtype)
    for slot, i in zip(slots, idx, strict=True):
        frame = getattr(run[i], role)
        if frame.shape == shape:  # a camera changed size mid-run: first shape only
            data[slot] = frame
    return data, t_scale, t0


def _restored(
    run: Run, folder: Path, *, width: bool = False
) -> tuple[np.ndarray, float, float] | None:
    """The restored frames on their time axis; ``width``: their intervals'
    widths (upper - lower, from the uncertainty file) instead."""
    index_path = folder / L.PREDICTION_INDEX
    if not index_path.is_file():
        return None
    index = [json.loads(x) for x in index_path.read_text().splitlines() if x.strip()]
    if width:
        index = [r for r in index if r.get("uncertainty_pages")]
    if not index:
        return None
    trig_to_pair = {
        int(r["trigger_index"]): int(r.get("pair", i))
        for i, r in enumerate(run.records)
    }
    pairs = [
        int(r["pair"])
        if "trigger_index" in r
        else trig_to_pair.get(int(r["pair"]), int(r["pair"]))
        for r in index
    ]
    order = np.argsort(pairs, kind="stable")
    pairs = [pairs[k] for k in order]
    slots, t_scale, t0 = _time_axis(pairs)
    name = L.UNCERTAINTY_TIFF if width else L.PREDICTION_TIFF
    with tifffile.TiffFile(folder / name) as tif:
        if width:
            frames = [
                tif.pages[int(index[k]["uncertainty_pages"][1])].asarray()
                - tif.pages[int(index[k]["uncertainty_pages"][0])].asarray()
                for k in order
            ]
        else:
            frames = [tif.pages[int(index[k]["page"])].asarray() for k in order]
    data = np.zeros((slots[-1] + 1, *frames[0].shape), dtype=np.float32)
    for slot, frame in zip(slots, frames, strict=True):
        if frame.shape == data.shape[1:]:
            data[slot] = frame
    return data, t_scale, t0


def _layer(
    data: np.ndarray,
    name: str,
    scale: tuple[float, float, float],
    translate: tuple[float, ...],
    run: Run,
    reg: Registration,
    **kwargs: Any,
) -> LayerData:
    meta = {
        "pairscope": {
            "run": str(run.path),
            "axes": "pair, y (µm), x (µm)",
            "units": dict(zip(AXIS_LABELS, UNITS, strict=True)),
            "registration": {
                "shift_y_px": reg.shift_y_px,
                "shift_x_px": reg.shift_x_px,
                "scale": reg.scale,
                "n_pairs": reg.n_pairs,
            },
        }
    }
    kw = {
        "name": name,
        "scale": tuple(float(v) for v in scale),
        "translate": tuple(float(v) for v in translate),
        "metadata": meta,
        **kwargs,
    }
    if _napari_has_units():
        kw |= {"units": UNITS, "axis_labels": AXIS_LABELS}
    return data, kw, "image"
