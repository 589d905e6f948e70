"""A torch ``Dataset`` of aligned (low-dose, reference) crops from run folders.

Time-block split: per run, the pairs are grouped by ``trigger_index // block_size``;
the last ``round(val_fraction * n_blocks)`` blocks (at least one) are validation,
the ``gap_blocks`` blocks before them are left out, the rest is training.  So no two
frames closer than ``gap_blocks * block_size`` triggers sit on both sides, and the
model is validated on later frames than it saw (forward validation).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .._binning import bin_sum
from ._reader import Run, open_run
from .calibration import (
    Registration,
    apply_registration,
    registration_or_estimate,
)

__all__ = ["PairDataset", "frames_independent", "run_registration", "split_blocks"]

logger = logging.getLogger(__name__)

Split = Literal["train", "val"]
P_LOW, P_HIGH = 1.0, 99.8


def split_blocks(
    trigger_indices: list[int],
    *,
    val_fraction: float = 0.2,
    block_size: int = 10,
    gap_blocks: int = 1,
) -> dict[str, list[int]]:
    """Positions of ``trigger_indices`` in ``"train"``, ``"val"`` and ``"gap"``."""
    blocks = sorted({t // block_size for t in trigger_indices})
    n_val = max(1, round(val_fraction * len(blocks)))
    if len(blocks) < n_val + gap_blocks + 1:
        raise ValueError(
            f"{len(trigger_indices)} pairs make {len(blocks)} blocks of "
            f"{block_size} triggers: too few for a train / gap / val split; use a "
            "smaller block_size, a longer run, or split=None"
        )
    val = set(blocks[-n_val:])
    gap = set(blocks[-n_val - gap_blocks : -n_val]) if gap_blocks else set()
    out: dict[str, list[int]] = {"train": [], "val": [], "gap": []}
    for i, t in enumerate(trigger_indices):
        b = t // block_size
        out["val" if b in val else "gap" if b in gap else "train"].append(i)
    return out


#: Fine-structure correlation of consecutive frames below which they are taken as
#: independent snapshots.  A timelapse of one field scores far above it (the demo
#: rig: >= 0.9); independent fields score about 0.
INDEPENDENT_BELOW = 0.3


def _fine_structure(frame: np.ndarray) -> np.ndarray:
    """A 2x2-binned frame minus its blur: structure, with shading and offset gone."""
    from scipy.ndimage import gaussian_filter

    a = bin_sum(frame.astype(np.float64), 2)
    return a - gaussian_filter(a, 4.0)


def frames_independent(
    run: Run, indices: Sequence[int], *, max_pairs: int = 16
) -> bool:
    """Whether the reference frames at ``indices`` are independent snapshots.

    Consecutive frames of the same position, z and channel are compared: the
    median correlation of their fine structure (:func:`_fine_structure`) under
    :data:`INDEPENDENT_BELOW` means each frame shows a different field (imported
    snapshots), so a pair-by-pair split leaks nothing; above it, frames share
    structure (a timelapse) and the time-block split with its gap is needed.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in indices:
        ev = run.records[i].get("event_index") or {}
        key = tuple(ev.get(k) for k in ("p", "g", "z", "c"))
        groups.setdefault(key, []).append(i)
    neighbours = [pair for g in groups.values() for pair in itertools.pairwise(g)]
    if not neighbours:
        return True
    step = max(1, len(neighbours) // max_pairs)
    chosen = neighbours[::step][:max_pairs]
    fine = {
        k: _fine_structure(run[k].reference)  # type: ignore[arg-type]
        for k in sorted({k for pair in chosen for k in pair})
    }
    corr = []
    for a, b in chosen:
        fa, fb = fine[a], fine[b]
        den = float(np.sqrt((fa * fa).sum() * (fb * fb).sum()))
        corr.append(float((fa * fb).sum()) / den if den > 0 else 1.0)
    return float(np.median(corr)) < INDEPENDENT_BELOW


class PairDataset(Dataset):
    """Random aligned crops of pairs with a reference, normalised to float32.

    Items are ``(lowdose[1, c/f, c/f], reference[1, c, c])`` with ``c = crop``.  The
    reference is resampled onto the low-dose camera's grid with the run's
    ``calibration.json`` (``apply_calibration``), or with one estimated from its
    pairs where it has none (``registrations`` gives them instead, ``None`` for
    none): a model learns
    one geometry, the low-dose camera's, whatever flips and turns the crops take
    (an offset left between the cameras would turn with them and blur the model).
    The low-dose crop starts at the reference origin ``/ f``.  Training crops and
    augmentations (flips, 90° rotations, applied to both) draw from torch's global
    RNG (seeded per DataLoader worker); validation items (``augment=False``) use a
    fixed crop per index.

    ``normalization``: ``{"input": {...}, "target": {...}}`` in the fields of
    :class:`pairscope.restore.Normalization`; if ``None`` it is computed from the
    ``P_LOW``/``P_HIGH`` percentiles of this dataset's pairs (pass the training
    set's ``.normalization`` to the validation set).
    """

    def __init__(
        self,
        runs: Sequence[str | Path | Run],
        *,
        crop: int = 128,
        augment: bool = True,
        split: Split | None = None,
        val_fraction: float = 0.2,
        block_size: int = 10,
        gap_blocks: int = 1,
        seed: int = 0,
        normalization: dict[str, dict[str, Any]] | None = None,
        apply_calibration: bool = True,
        samples_per_epoch: int | None = None,
        cache_size: int = 512,
        registrations: Sequence[Registration | None] | None = None,
    ) -> None:
        if not runs:
            raise ValueError("PairDataset needs at least one run")
        opened = [r if isinstance(r, Run) else open_run(r) for r in runs]
        self.run_paths = [r.path for r in opened]
        factors = {r.factor for r in opened}
        if len(factors) != 1:
            raise ValueError(f"runs have different binning factors {sorted(factors)}")
        self.factor = factors.pop()
        if crop % self.factor:
            raise ValueError(f"crop {crop} is not a multiple of factor {self.factor}")
        self.crop, self.augment, self.seed = crop, augment, seed
        self.samples_per_epoch = samples_per_epoch
        self.cache_size = cache_size
        if registrations is not None and len(registrations) != len(opened):
            raise ValueError("give one registration per run")
        if registrations is None:
            registrations = [
                run_registration(r) if apply_calibration else None for r in opened
            ]
        self.registrations = [r or Registration() for r in registrations]
        self.items: list[tuple[int, int]] = []
        for ri, run in enumerate(opened):
            idx = run.with_reference()
            if split is not None:
                trig = [int(run.records[i]["trigger_index"]) for i in idx]
                pos = split_blocks(
                    trig,
                    val_fraction=val_fraction,
                    block_size=block_size,
                    gap_blocks=gap_blocks,
                )[split]
                idx = [idx[p] for p in pos]
            self.items += [(ri, i) for i in idx]
        if not self.items:
            raise ValueError("no pairs with a reference frame in these runs")
        self.pixel_sizes = _pixel_sizes(opened[0])
        self._runs: dict[int, Run] = {}
        self._pid = -1
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = (
            OrderedDict()
        )
        self._margin = self._border()
        self.normalization = normalization or self._compute_normalization()
        self._lo = _bounds(self.normalization["input"])
        self._hi = _bounds(self.normalization["target"])

    # -- public -----------------------------------------------------------
    def __len__(self) -> int:
        return self.samples_per_epoch or len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, ref = self.sample(index)
        return self.to_tensors(low, ref)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw (ADU, float32) aligned crop pair for ``index``, augmented."""
        key = self.items[index % len(self.items)]
        low, ref = self.load(key)
        f, c = self.factor, self.crop
        m = self._margin
        ny = (low.shape[0] - c // f - 2 * m) + 1
        nx = (low.shape[1] - c // f - 2 * m) + 1
        if ny < 1 or nx < 1:
            raise ValueError(f"crop {c} does not fit frames of {ref.shape}")
        if self.augment:
            r = torch.randint(0, 2**31 - 1, (4,)).tolist()
            oy, ox, flips, rot = r[0] % ny, r[1] % nx, r[2] % 4, r[3] % 4
        else:
            rng = np.random.default_rng((self.seed, index))
            oy, ox = int(rng.integers(ny)), int(rng.integers(nx))
            flips = rot = 0
        oy, ox = oy + m, ox + m
        lc = low[oy : oy + c // f, ox : ox + c // f]
        rc = ref[oy * f : oy * f + c, ox * f : ox * f + c]
        return _augment(lc, flips, rot), _augment(rc, flips, rot)

    def to_tensors(
        self, low: np.ndarray, ref: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise raw ADU crops into ``(1, h, w)`` float32 tensors."""
        lo, hi = self._lo
        tlo, thi = self._hi
        x = torch.from_numpy(((low - lo) / (hi - lo)).astype(np.float32))[None]
        y = torch.from_numpy(((ref - tlo) / (thi - tlo)).astype(np.float32))[None]
        return x, y

    def load(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Low-dose and registered reference (float32 ADU) of one pair, cached."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        ri, i = key
        pair = self._run(ri)[i]
        assert pair.lowdose is not None and pair.reference is not None  # items
        ref = apply_registration(pair.reference, self.registrations[ri], self.factor)
        out = (pair.lowdose.astype(np.float32), ref.astype(np.float32))
        self._cache[key] = out
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    @property
    def trigger_indices(self) -> list[tuple[int, int]]:
        """``(run number, trigger_index)`` of each pair in this dataset."""
        return [
            (ri, int(self._run(ri).records[i]["trigger_index"])) for ri, i in self.items
        ]

    # -- internals ----------------------------------------------------------
    def _run(self, ri: int) -> Run:
        """Runs are (re)opened per process: file handles must not cross a fork."""
        if self._pid != os.getpid():
            self._runs, self._pid = {}, os.getpid()
        if ri not in self._runs:
            self._runs[ri] = open_run(self.run_paths[ri])
        return self._runs[ri]

    def _border(self) -> int:
        """Low-dose pixels to skip at each edge: the warp repeats edge pixels there."""
        worst = max(
            max(abs(r.shift_y_px), abs(r.shift_x_px)) + abs(r.scale - 1) * 1024
            for r in self.registrations
        )
        return math.ceil(worst / self.factor) if worst > 0 else 0

    def _compute_normalization(self, max_pairs: int = 64) -> dict[str, dict[str, Any]]:
        step = max(1, math.ceil(len(self.items) / max_pairs))
        lows, refs = [], []
        for key in self.items[::step]:
            low, ref = self.load(key)
            lows.append(low.ravel())
            refs.append(ref[:: self.factor, :: self.factor].ravel())
        return {
            "input": _norm_dict(np.concatenate(lows)),
            "target": _norm_dict(np.concatenate(refs)),
        }


def run_registration(run: Run) -> Registration | None:
    """The run's stored camera registration, else one estimated from its pairs
    (:func:`registration_or_estimate`); ``None`` (warned) for frames without
    structure, whose pairs are then used as they are."""
    try:
        return registration_or_estimate(run)
    except ValueError as e:
        logger.warning("%s: %s; pairs used unregistered", run.path, e)
        return None


def _norm_dict(data: np.ndarray) -> dict[str, Any]:
    lo, hi = np.percentile(data, (P_LOW, P_HIGH))
    hi = hi if hi > lo else lo + 1.0
    return {
        "mode": "fixed",
        "p_low": P_LOW,
        "p_high": P_HIGH,
        "low": float(lo),
        "high": float(hi),
    }


def _bounds(norm: Any) -> tuple[float, float]:
    d = norm if isinstance(norm, dict) else norm.model_dump()
    if d.get("mode", "fixed") != "fixed":
        raise ValueError("PairDataset supports fixed normalisation only")
    return float(d["low"]), float(d["high"])


def _augment(a: np.ndarray, flips: int, rot: int) -> np.ndarray:
    if flips & 1:
        a = a[::-1]
    if flips & 2:
        a = a[:, ::-1]
    return np.ascontiguousarray(np.rot90(a, rot))


def _pixel_sizes(run: Run) -> tuple[float | None, float | None]:
    """``(low-dose, reference)`` pixel sizes in µm from the first manifest record."""
    for rec in run.records:
        if rec.get("reference") and rec.get("lowdose"):
            return (
                rec["lowdose"].get("pixel_size_um"),
                rec["reference"].get("pixel_size_um"),
            )
    return None, None
