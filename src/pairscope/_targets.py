"""Point-pair targets for the two-point table: the ``--targets`` file format.

Pure Python (no numpy, no torch), so ``pairscope evaluate --help`` can show
:data:`TARGETS_HELP` without loading the evaluation.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TARGETS_HELP",
    "XY",
    "Target",
    "TargetSpec",
    "check_targets_fit",
    "load_targets",
]

XY = tuple[float, float]
Target = tuple[XY, XY, float]

TARGETS_HELP = """\
JSON file of point-pair targets, in *reference* pixel coordinates (x = column,
y = row, as seen in the reference image); they are mapped onto the low-dose camera's
frame through the run's registration.  Either a list that applies to every pair:
  [[[x1, y1], [x2, y2], separation_um], ...]
or an object with targets per pair (the manifest's "pair" number; omit "pair" for
every pair):
  {"targets": [{"pair": 3, "p1": [x1, y1], "p2": [x2, y2], "separation_um": 0.2}]}
"""


@dataclass(frozen=True)
class TargetSpec:
    """User targets: ``every`` apply to all pairs, ``per_pair`` to one pair each."""

    every: tuple[Target, ...] = ()
    per_pair: dict[int, tuple[Target, ...]] | None = None

    def for_pair(self, pair: int) -> list[Target]:
        return [*self.every, *((self.per_pair or {}).get(pair, ()))]


def load_targets(path: str | Path) -> TargetSpec:
    """Read a targets file (:data:`TARGETS_HELP`); one clear line if it is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if isinstance(data, list):
            return TargetSpec(every=tuple(_target(a, b, s) for a, b, s in data))
        every: list[Target] = []
        per: dict[int, list[Target]] = defaultdict(list)
        for t in data["targets"]:
            tg = _target(t["p1"], t["p2"], t["separation_um"])
            (per[int(t["pair"])] if "pair" in t else every).append(tg)
        return TargetSpec(tuple(every), {k: tuple(v) for k, v in per.items()})
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a targets file ({type(e).__name__}: {e}); see "
            "'pairscope evaluate --help' for the format"
        ) from None


def _target(a: Sequence[float], b: Sequence[float], sep: float) -> Target:
    (x1, y1), (x2, y2) = a, b
    values = [float(v) for v in (x1, y1, x2, y2, sep)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"coordinates and separation must be finite, got {a}, {b}, {sep}"
        )
    if values[4] <= 0:
        raise ValueError(f"separation_um must be positive, got {sep}")
    return ((values[0], values[1]), (values[2], values[3]), values[4])


def check_targets_fit(spec: TargetSpec, shape: tuple[int, int], where: str) -> None:
    """Refuse targets outside a ``shape`` (rows, columns) reference frame, before
    any work (a point far outside would make a profile of billions of samples)."""
    h, w = shape
    per_pair = [(p, t) for p, ts in (spec.per_pair or {}).items() for t in ts]
    for pair, (p1, p2, _) in [(None, t) for t in spec.every] + per_pair:
        for x, y in (p1, p2):
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                which = "" if pair is None else f" of pair {pair}"
                raise ValueError(
                    f"--targets: the point ({x:g}, {y:g}){which} lies outside the "
                    f"{w}x{h} reference frame of {where}; targets are reference "
                    f"pixels, x = column 0..{w - 1}, y = row 0..{h - 1}"
                )
