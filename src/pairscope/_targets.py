"""Two-point targets and their controls: the ``--targets`` file format.

A *pair* is two point objects at a known separation; a *rod* is a single
object (a straight rod from one end to the other) matched to the pairs of a
separation.  The table counts the pairs a method resolves and the rods it splits.

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
    "ROD_LENGTH_OVER_SEPARATION",
    "TARGETS_HELP",
    "XY",
    "Target",
    "TargetSpec",
    "check_target_lengths",
    "check_targets_fit",
    "load_targets",
]

XY = tuple[float, float]
Target = tuple[XY, XY, float]
KINDS = ("pair", "rod")
#: A matched rod's length over its pairs' separation (the demo specimen's; a uniform
#: rod sqrt(3) times the separation long has the pair's second moment).
ROD_LENGTH_OVER_SEPARATION = 1.8
#: What a pair's point distance, or a rod's length, may be in units of its
#: separation_um before the file is called mixed up.
PAIR_DISTANCE_RANGE = (0.7, 1.4)
ROD_LENGTH_RANGE = (1.2, 3.0)

TARGETS_HELP = """\
JSON file of two-point targets, in *reference* pixel coordinates (x = column,
y = row, as seen in the reference image); they are mapped onto the low-dose camera's
frame through the run's registration.  A target is a pair of point objects (p1, p2
their centres) or, as its control, a rod: one single object from end p1 to end p2,
about 1.8x the separation long, as bright as a pair (a method that shows a dip in
it splits a single object: it invents).  Either a list that applies to every pair:
  [[[x1, y1], [x2, y2], separation_um], [[x1, y1], [x2, y2], separation_um, "rod"]]
or an object with targets per pair (the manifest's "pair" number; omit "pair" for
every pair; "kind" is "pair" unless given):
  {"targets": [{"pair": 3, "p1": [x1, y1], "p2": [x2, y2], "separation_um": 0.2},
               {"kind": "rod", "p1": [x1, y1], "p2": [x2, y2], "separation_um": 0.2}]}
"""


@dataclass(frozen=True)
class TargetSpec:
    """User targets: ``every`` apply to all pairs, ``per_pair`` to one pair each;
    ``rods_every`` and ``rods_per_pair`` are the rods (ends, not centres)."""

    every: tuple[Target, ...] = ()
    per_pair: dict[int, tuple[Target, ...]] | None = None
    rods_every: tuple[Target, ...] = ()
    rods_per_pair: dict[int, tuple[Target, ...]] | None = None

    def for_pair(self, pair: int) -> list[Target]:
        """The point pairs of acquisition pair ``pair``."""
        return [*self.every, *((self.per_pair or {}).get(pair, ()))]

    def rods_for_pair(self, pair: int) -> list[Target]:
        """The rods of acquisition pair ``pair``."""
        return [*self.rods_every, *((self.rods_per_pair or {}).get(pair, ()))]

    def labelled(self) -> list[tuple[str, int | None, Target]]:
        """Every target as ``(kind, pair or None, target)``, for checks."""
        out: list[tuple[str, int | None, Target]] = []
        for kind, every, per in (
            ("pair", self.every, self.per_pair),
            ("rod", self.rods_every, self.rods_per_pair),
        ):
            out += [(kind, None, t) for t in every]
            out += [(kind, p, t) for p, ts in (per or {}).items() for t in ts]
        return out


def load_targets(path: str | Path) -> TargetSpec:
    """Read a targets file (:data:`TARGETS_HELP`); one clear line if it is wrong."""
    path = Path(path)
    every: dict[str, list[Target]] = {k: [] for k in KINDS}
    per: dict[str, dict[int, list[Target]]] = {k: defaultdict(list) for k in KINDS}
    try:
        data = json.loads(path.read_text())
        if isinstance(data, list):
            for entry in data:
                if not isinstance(entry, list) or len(entry) not in (3, 4):
                    raise ValueError(
                        f"a list entry is [p1, p2, separation_um] or "
                        f'[p1, p2, separation_um, "rod"], got {entry!r}'
                    )
                kind = _kind(entry[3] if len(entry) == 4 else "pair")
                every[kind].append(_target(*entry[:3]))
        else:
            for t in data["targets"]:
                tg = _target(t["p1"], t["p2"], t["separation_um"])
                kind = _kind(t.get("kind", "pair"))
                (per[kind][int(t["pair"])] if "pair" in t else every[kind]).append(tg)
        return TargetSpec(
            tuple(every["pair"]),
            {k: tuple(v) for k, v in per["pair"].items()},
            tuple(every["rod"]),
            {k: tuple(v) for k, v in per["rod"].items()},
        )
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a targets file ({type(e).__name__}: {e}); see "
            "'pairscope evaluate --help' for the format"
        ) from None


def _kind(value: object) -> str:
    if value not in KINDS:
        raise ValueError(f'"kind" is "pair" or "rod", got {value!r}')
    return str(value)


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
    for kind, pair, (p1, p2, _) in spec.labelled():
        for x, y in (p1, p2):
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                which = "" if pair is None else f" of pair {pair}"
                what = "the point" if kind == "pair" else "the rod's end"
                raise ValueError(
                    f"--targets: {what} ({x:g}, {y:g}){which} lies outside the "
                    f"{w}x{h} reference frame of {where}; targets are reference "
                    f"pixels, x = column 0..{w - 1}, y = row 0..{h - 1}"
                )


def check_target_lengths(spec: TargetSpec, pixel_um: float) -> None:
    """Refuse pairs and rods that are mixed up: a pair's points must lie about its
    ``separation_um`` apart, a rod about 1.8x that long (``pixel_um``: the
    reference pixel size)."""
    for kind, pair, (p1, p2, sep) in spec.labelled():
        ratio = math.dist(p1, p2) * pixel_um / sep
        lo, hi = PAIR_DISTANCE_RANGE if kind == "pair" else ROD_LENGTH_RANGE
        if lo <= ratio <= hi:
            continue
        which = "" if pair is None else f" of pair {pair}"
        if kind == "pair":
            hint = (
                'if it is one object, mark it "kind": "rod"'
                if ratio > hi
                else "check the coordinates and separation_um"
            )
            raise ValueError(
                f"--targets: the pair {list(p1)}-{list(p2)}{which} is "
                f"{ratio:.2f}x its separation_um ({sep:g} um) apart at "
                f"{pixel_um:g} um/pixel, not about 1x; {hint}"
            )
        raise ValueError(
            f"--targets: the rod {list(p1)}-{list(p2)}{which} is {ratio:.2f}x its "
            f"separation_um ({sep:g} um) long at {pixel_um:g} um/pixel; a rod "
            f"matched to a pair is about {ROD_LENGTH_OVER_SEPARATION}x (p1 and p2 are "
            'its ends; for a pair of points drop "kind": "rod")'
        )
