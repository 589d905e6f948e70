"""Bring your own pairs: two image stacks from another rig become a run folder.

Inputs: TIFF or OME-TIFF stacks, or OME-Zarr images (0.4 / 0.5; the image group).

Frame ``i`` of the low-dose stack pairs with frame ``i`` of the reference stack.
Physical facts come from the options or, for OME-TIFF inputs, from their metadata
(``PhysicalSizeX``, the ``DetectorSettings`` binning, planes' ``ExposureTime``, and
the photometry pairscope recorded in its map annotation — never a detector's
``Gain``); the options win.  Nothing
is guessed: a fact that neither gives is an error naming the option to pass.  The
binning is the reference/low-dose size ratio when not given.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .. import __version__
from .._files import make_parents, remove_empty
from ..errors import PairscopeError
from ._ome import IMAGE_NS
from ._tifflog import tifffile_problems
from ._writer import RunWriter

LOW_LABEL, REF_LABEL = "ImportedLowDose", "ImportedReference"
#: the largest frame imported (the largest camera sensors: ~15 000 px, ~150 MP)
MAX_SIDE = 1 << 15
MAX_PIXELS = 1 << 28


class ImportError_(PairscopeError, ValueError):
    """The inputs cannot become a run folder as given (the message names the fix)."""


@dataclass(frozen=True, slots=True)
class _Pair:
    index: int
    lowdose: np.ndarray
    reference: np.ndarray
    metadata: dict[str, Any]


@dataclass(slots=True)
class _Stack:
    """A TIFF/OME-TIFF stack read one 2-D frame at a time, with its OME facts."""

    path: Path
    tif: Any  # a tifffile.TiffFile, or a tensorstore array (OME-Zarr)
    n: int
    shape: tuple[int, int]
    pixel_um: float | None = None
    offset: float | None = None
    gain: float | None = None
    binning: int | None = None
    exposure_ms: float | None = None
    camera: str | None = None
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint16))

    @classmethod
    def open(cls, path: Path, option: str) -> _Stack:
        if path.is_dir():
            return cls._open_zarr(path, option)
        if not path.is_file():
            raise FileNotFoundError(f"{option}: no such file {path}")
        with tifffile_problems() as problems:
            try:
                tif = tifffile.TiffFile(path)
            except Exception as exc:
                raise ImportError_(
                    f"{option}: {path} is not a readable TIFF ({exc})"
                ) from exc
            try:
                return cls._open_tiff(tif, path, option, problems)
            except BaseException:
                tif.close()
                raise

    @classmethod
    def _open_tiff(
        cls, tif: tifffile.TiffFile, path: Path, option: str, problems: list[str]
    ) -> _Stack:
        try:
            series = tif.series[0]
        except Exception as exc:
            raise ImportError_(
                f"{option}: {path} is not a readable TIFF ({exc})"
            ) from exc
        shape = tuple(int(s) for s in series.shape)
        if len(shape) < 2 or (series.keyframe.samplesperpixel or 1) > 1:
            raise ImportError_(
                f"{option}: {path} has shape {shape} (axes {series.axes}); "
                "pairscope imports stacks of 2-D single-channel frames"
            )
        n = math.prod(shape[:-2]) if len(shape) > 2 else 1
        stack = cls(path, tif, n, (shape[-2], shape[-1]))
        stack._check_declared(option, np.dtype(series.dtype))
        if not series.keyframe.compression > 1:  # raw pixels: all in the file?
            stack._check_extent(option, series)
        if cut := [m for m in problems if "invalid page offset" in m]:
            raise ImportError_(
                f"{option}: {path} is cut short or damaged ({cut[0]}): copy it again"
            )
        if tif.is_ome and tif.ome_metadata:
            stack._read_ome(tif.ome_metadata)
        return stack

    def _check_declared(self, option: str, dtype: np.dtype) -> None:
        """Refuse, before reading a pixel, stacks with no frames, frames larger
        than any camera's, or pixels that are not camera counts."""
        where = f"{option}: {self.path}"
        if self.n == 0:
            raise ImportError_(
                f"{where} holds no frames; pass a stack of paired frames"
            )
        h, w = self.shape
        if max(h, w) > MAX_SIDE or min(h, w) < 1 or h * w > MAX_PIXELS:
            raise ImportError_(
                f"{where} declares frames of {w}x{h} pixels; pairscope imports camera "
                f"frames of 1 to {MAX_SIDE} pixels a side and at most "
                f"{MAX_PIXELS >> 20} megapixels (a damaged or foreign file?)"
            )
        if dtype.kind not in "uif":
            raise ImportError_(
                f"{where} holds {dtype} pixels; pairscope imports camera counts "
                "(unsigned or signed integers, or real floats): export the raw frames"
            )
        self.dtype = dtype

    def _check_extent(self, option: str, series: Any) -> None:
        """Uncompressed pixels declared beyond the end of the file: cut short."""
        need = self.n * self.shape[0] * self.shape[1] * self.dtype.itemsize
        size = self.path.stat().st_size
        if need > size:
            raise ImportError_(
                f"{option}: {self.path} declares {self.n} frame(s) of "
                f"{self.shape[1]}x{self.shape[0]} {self.dtype} pixels ({need} bytes) "
                f"but the file holds {size} bytes: it was cut short (an incomplete "
                "copy?) or is damaged; copy it again"
            )

    def _read_ome(self, xml: str) -> None:
        import ome_types

        try:
            ome = ome_types.from_xml(xml, validate=False)
        except Exception:  # foreign or broken OME: the options must say it
            return
        if not ome.images:
            return
        px = ome.images[0].pixels
        if px.physical_size_x:
            unit = getattr(px.physical_size_x_unit, "value", "µm")
            scale = {"µm": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit)
            if scale:
                self.pixel_um = float(px.physical_size_x) * scale
        if px.planes and px.planes[0].exposure_time:
            unit = getattr(px.planes[0].exposure_time_unit, "value", "s")
            scale = {"s": 1e3, "ms": 1.0, "µs": 1e-3}.get(unit)
            if scale:
                self.exposure_ms = float(px.planes[0].exposure_time) * scale
        settings = px.channels[0].detector_settings if px.channels else None
        if settings is None:
            return
        if settings.binning is not None:
            text = getattr(settings.binning, "value", str(settings.binning))
            if "x" in text and text.split("x")[0].isdigit():
                self.binning = int(text.split("x")[0])
        for inst in ome.instruments:
            for det in inst.detectors:
                if det.id == settings.id:
                    self.camera = det.model
        # photometry only where pairscope recorded it (a detector's Gain is an EM
        # gain, an analog step or a mode index, never taken as e-/ADU)
        refs = {r.id for r in ome.images[0].annotation_refs}
        annotations = ome.structured_annotations
        for ann in annotations.map_annotations if annotations is not None else []:
            if ann.id in refs and ann.namespace == IMAGE_NS:
                values = {m.k: m.value for m in ann.value.ms}
                self.gain = _positive(values.get("photometry_e_per_adu"))
                offset = values.get("photometry_offset_adu")
                self.offset = None if offset is None else float(offset)

    @classmethod
    def _open_zarr(cls, path: Path, option: str) -> _Stack:
        """An OME-Zarr image (0.4: zarr v2, 0.5: zarr v3): its first resolution."""
        import json

        v3 = (path / "zarr.json").is_file()
        try:
            if v3:
                attrs = json.loads((path / "zarr.json").read_text())["attributes"]
                attrs = attrs.get("ome", attrs)
            else:
                attrs = json.loads((path / ".zattrs").read_text())
            ms = attrs["multiscales"][0]
            ds = ms["datasets"][0]
            import tensorstore as ts

            arr = ts.open(
                {
                    "driver": "zarr3" if v3 else "zarr",
                    "kvstore": {"driver": "file", "path": str(path / ds["path"])},
                }
            ).result()
        except Exception as exc:
            raise ImportError_(
                f"{option}: {path} is not a readable OME-Zarr image ({exc}); pass "
                "the image group (the folder with the multiscales metadata)"
            ) from exc
        shape = tuple(int(x) for x in arr.shape)
        axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
        if len(shape) < 2 or (axes and "c" in axes and shape[axes.index("c")] > 1):
            raise ImportError_(
                f"{option}: {path} has shape {shape} (axes {axes}); pairscope "
                "imports stacks of 2-D single-channel frames"
            )
        stack = cls(path, arr, math.prod(shape[:-2]), (shape[-2], shape[-1]))
        stack._check_declared(option, np.dtype(arr.dtype.numpy_dtype))
        units = [
            a.get("unit") if isinstance(a, dict) else None for a in ms.get("axes", [])
        ]
        for t in ds.get("coordinateTransformations", []):
            if t.get("type") == "scale" and units:
                scale = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}
                factor = scale.get(units[-1] or "")
                if factor:
                    stack.pixel_um = float(t["scale"][-1]) * factor
        return stack

    def frame(self, i: int, option: str) -> np.ndarray:
        """Frame ``i``, checked: readable, finite, not negative."""
        try:
            if isinstance(self.tif, tifffile.TiffFile):
                with tifffile_problems():
                    data = self.tif.asarray(key=i, series=0)
            else:
                lead = (
                    np.unravel_index(i, tuple(self.tif.shape[:-2]))
                    if self.n > 1
                    else ()
                )
                data = self.tif[tuple(int(k) for k in lead)].read().result()
            frame = np.asarray(data).reshape(self.shape)
        except Exception as exc:  # cut short, a damaged page or chunk
            raise ImportError_(
                f"{option}: frame {i} of {self.path} cannot be read "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]}): the file "
                "is cut short or damaged; copy it again"
            ) from exc
        _check_values(frame, i, self.path, option)
        return frame

    def close(self) -> None:
        if isinstance(self.tif, tifffile.TiffFile):
            self.tif.close()


def _check_values(frame: np.ndarray, i: int, path: Path, option: str) -> None:
    """Camera counts are finite and never negative (a raw frame, not a processed one)."""
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        bad = int(np.size(frame) - np.count_nonzero(np.isfinite(frame)))
        raise ImportError_(
            f"{option}: frame {i} of {path} holds {bad} NaN or infinite pixel(s); "
            "pairscope imports raw camera counts: export the raw frames, not "
            "processed ones"
        )
    if frame.dtype.kind == "i" and frame.size and frame.min() < 0:
        raise ImportError_(
            f"{option}: frame {i} of {path} holds negative values (down to "
            f"{frame.min()}); pairscope imports raw camera counts (ADU >= 0): "
            "export the raw frames, not background-subtracted ones"
        )


def _need(value: float | None, option: str, what: str, path: Path) -> float:
    if value is None:
        raise ImportError_(
            f"{path} does not record {what}; give it with {option} (pairscope never "
            "guesses physical facts)"
        )
    if not (math.isfinite(value) and value >= 0) or (
        option != "--offset" and value <= 0
    ):
        raise ImportError_(f"{option} must be a positive number, got {value}")
    return float(value)


def _sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents)."""
    h = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(functools.partial(fh.read, 1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def import_pairs(
    lowdose: str | Path,
    reference: str | Path,
    out: str | Path,
    *,
    reference_pixel_um: float | None = None,
    binning: int | None = None,
    offset: float | None = None,
    gain: float | None = None,
    reference_offset: float | None = None,
    reference_gain: float | None = None,
    progress: bool = True,
    on_pair: Callable[[int], None] | None = None,
) -> Path:
    """Write the pairs of two stacks into a new run folder under ``out``; its path.

    ``offset``/``gain``: the low-dose camera's (ADU, e⁻/ADU); the reference camera's
    default to them unless ``reference_offset``/``reference_gain`` say otherwise.
    """
    from .._progress import progress as progress_bar

    low = _Stack.open(Path(lowdose), "--lowdose")
    try:
        ref = _Stack.open(Path(reference), "--reference")
    except BaseException:
        low.close()
        raise
    try:
        if low.n != ref.n:
            raise ImportError_(
                f"frame i of --lowdose pairs with frame i of --reference, but "
                f"{low.path.name} has {low.n} frames and {ref.path.name} {ref.n}"
            )
        ratio = ref.shape[0] / low.shape[0], ref.shape[1] / low.shape[1]
        if binning is None:
            binning = low.binning
        if binning is None:
            if ratio[0] != ratio[1] or ratio[0] < 1 or not ratio[0].is_integer():
                raise ImportError_(
                    f"frames of {low.shape} (low-dose) and {ref.shape} (reference) "
                    "are not an integer binning apart; give --binning"
                )
            binning = int(ratio[0])
        if ratio != (binning, binning):
            raise ImportError_(
                f"--binning {binning} needs reference frames {binning}x the low-dose "
                f"frames, got {ref.shape} and {low.shape}; crop or bin the stacks"
            )
        px = reference_pixel_um or ref.pixel_um
        if px is None and low.pixel_um is not None:
            px = low.pixel_um / binning
        px = _need(px, "--reference-pixel-um", "the reference pixel size", ref.path)
        off = _need(offset if offset is not None else low.offset, "--offset",
                    "the low-dose camera offset (ADU)", low.path)  # fmt: skip
        g = _need(
            gain or low.gain, "--gain", "the low-dose camera gain (e-/ADU)", low.path
        )
        ref_off = reference_offset if reference_offset is not None else ref.offset
        ref_g = reference_gain or ref.gain
        ref_off = off if ref_off is None else _need(ref_off, "--offset", "", ref.path)
        ref_g = g if ref_g is None else _need(ref_g, "--gain", "", ref.path)
        info = {
            "pairscope_version": __version__,
            "imported_from": {
                "lowdose": str(low.path.resolve()),
                "lowdose_sha256": _sha256(low.path),
                "reference": str(ref.path.resolve()),
                "reference_sha256": _sha256(ref.path),
            },
            "detectors": {
                "mode": "imported",
                "lowdose": LOW_LABEL,
                "reference": REF_LABEL,
                "factor": binning,
                "lowdose_pixel_size_um": px * binning,
                "reference_pixel_size_um": px,
                "reasons": [
                    f"imported: frame i of {low.path.name} pairs with frame i of "
                    f"{ref.path.name}",
                    f"binning {binning}, reference pixel {px:g} µm",
                ],
            },
            "system_state": {
                LOW_LABEL: {
                    "Gain": str(g),
                    "Offset": str(off),
                    "Binning": str(binning),
                },
                REF_LABEL: {"Gain": str(ref_g), "Offset": str(ref_off), "Binning": "1"},
            },
            "sequence": {},
        }
        info["rig_model"] = _rig_model(
            info,
            (g, off, gain is not None),
            (ref_g, ref_off, reference_gain is not None),
        )
        made = make_parents(Path(out) / "run")  # folders for the run, if missing
        try:
            writer = RunWriter(out, name="import")
        except BaseException:
            remove_empty(made)
            raise
        try:
            writer.start(info)
            for i in progress_bar(
                range(low.n), desc="importing", unit="pair", disable=not progress
            ):
                meta = {
                    "lowdose": _frame_info(LOW_LABEL, low, binning, px * binning, g),
                    "reference": _frame_info(REF_LABEL, ref, 1, px, ref_g),
                    "event_index": {"t": i},
                    "simultaneous": None,
                    "imported": True,
                }
                low_frame = low.frame(i, "--lowdose")
                ref_frame = ref.frame(i, "--reference")
                writer.submit(_Pair(i, low_frame, ref_frame, meta))
                if on_pair is not None:
                    on_pair(i)
        except BaseException:  # a partial copy is no run: the inputs are intact
            writer.discard()
            remove_empty(made)
            raise
        writer.close({"status": "completed", "pairs": low.n})
        return writer.run_dir
    finally:
        low.close()
        ref.close()


def _positive(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _rig_model(
    info: dict[str, Any],
    low: tuple[float, float, bool],
    ref: tuple[float, float, bool],
) -> dict[str, Any]:
    """The imported run's rig model: the photometry the import was given (an
    option, or the file's OME metadata), declared."""
    from ..rig import DeclaredPhotometry, build_rig_model

    def declared(figures: tuple[float, float, bool]) -> DeclaredPhotometry:
        gain, offset, from_option = figures
        where = (
            "pairscope import --gain/--offset"
            if from_option
            else ("pairscope import: the stack's OME metadata")
        )
        return DeclaredPhotometry(e_per_adu=gain, offset_adu=offset, reference=where)

    model = build_rig_model(
        info, declared_photometry={"lowdose": declared(low), "reference": declared(ref)}
    )
    return model.to_json()


def _frame_info(
    label: str, stack: _Stack, binning: int, px: float, gain: float
) -> dict[str, Any]:
    return {
        "camera": label,
        "label": label,
        "source_camera": stack.camera,
        "binning": binning,
        "pixel_size_um": px,
        "exposure_ms": stack.exposure_ms,
        "gain": gain,
        "timing_source": None,
    }
