"""Two-point (Rayleigh) resolution on known point pairs, with matched single rods as
the control: a dip in a rod is a single object split in two (invented)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.ndimage import map_coordinates

__all__ = [
    "RAYLEIGH_DIP_RATIO",
    "ROD_SPLIT_LIMIT",
    "TwoPointResult",
    "TwoPointTally",
    "TwoPointTarget",
    "rod_split",
    "smallest_resolved_separation",
    "two_point_report",
    "two_point_resolved",
    "wilson_interval",
]

#: Methods of the two-point table: the model, every baseline, the reference.
TABLE_METHODS = ("model", "nearest", "bilinear", "bicubic", "reference")
BASELINE_METHODS = ("nearest", "bilinear", "bicubic")

#: Minimum/peak intensity ratio of two Airy discs at the Rayleigh distance.
RAYLEIGH_DIP_RATIO = 0.735
#: A method splitting more of a separation's rods than this is inventing there.
ROD_SPLIT_LIMIT = 0.05

XY = tuple[float, float]
#: ``((x1, y1), (x2, y2), separation_um)`` in pixel coordinates of the image.
TwoPointTarget = tuple[XY, XY, float]


@dataclass(frozen=True)
class TwoPointResult:
    """Outcome of one two-point test.

    Attributes
    ----------
    resolved : bool
        ``dip <= dip_ratio``.
    dip : float
        Background-subtracted minimum between the peaks over the smaller peak.
    peak1, peak2 : float
        Background-subtracted maxima near the two expected positions.
    """

    resolved: bool
    dip: float
    peak1: float
    peak2: float


def two_point_resolved(
    img: ArrayLike,
    p1_xy_px: XY,
    p2_xy_px: XY,
    *,
    dip_ratio: float = RAYLEIGH_DIP_RATIO,
    background: float | None = None,
    bg_halfwidth: float = 2.0,
    extend: float = 0.5,
    search: float = 0.25,
    samples_per_px: int = 10,
) -> TwoPointResult:
    """Apply the Rayleigh dip criterion to a pair of points.

    A line profile through both points is sampled with linear interpolation
    (``samples_per_px`` samples per pixel), extended by ``extend`` times the
    separation beyond each point. A background is subtracted: unless given,
    the 5th percentile of the image patch within ``bg_halfwidth`` separations
    of the pair's midpoint (a square patch reaches darker corners than the
    line profile, which for close pairs never leaves the PSF). Each peak is the maximum within ``search``
    times the separation of its expected position, and the dip is the minimum
    between the two peaks divided by the smaller peak.

    Parameters
    ----------
    img : array_like
        2-D image.
    p1_xy_px, p2_xy_px : (float, float)
        Expected ``(x, y)`` point positions in pixels (x = column).
    dip_ratio : float
        Resolved iff ``dip <= dip_ratio``; 0.735 is the Rayleigh dip
        (26.5 %) of two equal Airy discs.
    background : float, optional
        Background level to subtract.
    bg_halfwidth : float
        Half-width of the background patch, in units of separation.
    extend, search : float
        Profile extension and peak search half-width, in units of separation.
    samples_per_px : int
        Profile sampling density.

    Returns
    -------
    TwoPointResult
    """
    im = np.asarray(img, dtype=np.float64)
    p1 = np.asarray(p1_xy_px, dtype=np.float64)
    p2 = np.asarray(p2_xy_px, dtype=np.float64)
    sep = float(np.hypot(*(p2 - p1)))
    if sep == 0:
        raise ValueError("the two points coincide")
    n = int(np.ceil(sep * (1 + 2 * extend) * samples_per_px)) + 1
    t = np.linspace(-extend, 1 + extend, n)
    xy = p1[None, :] + t[:, None] * (p2 - p1)[None, :]
    prof = map_coordinates(im, [xy[:, 1], xy[:, 0]], order=1, mode="nearest")
    if background is None:
        (cx, cy), h = 0.5 * (p1 + p2), bg_halfwidth * sep
        r0, c0 = max(int(cy - h), 0), max(int(cx - h), 0)
        patch = im[r0 : int(np.ceil(cy + h)) + 1, c0 : int(np.ceil(cx + h)) + 1]
        bg = float(np.percentile(patch, 5)) if patch.size else float(prof.min())
    else:
        bg = float(background)
    prof = prof - bg
    w1 = np.flatnonzero(np.abs(t) <= search)
    w2 = np.flatnonzero(np.abs(t - 1) <= search)
    i1 = int(w1[np.argmax(prof[w1])])
    i2 = int(w2[np.argmax(prof[w2])])
    peak1, peak2 = float(prof[i1]), float(prof[i2])
    low = min(peak1, peak2)
    if low <= 0:
        return TwoPointResult(False, 1.0, peak1, peak2)
    dip = float(prof[i1 : i2 + 1].min()) / low
    return TwoPointResult(dip <= dip_ratio, dip, peak1, peak2)


def rod_split(
    img: ArrayLike,
    end1_xy_px: XY,
    end2_xy_px: XY,
    separation_px: float,
    *,
    dip_ratio: float = RAYLEIGH_DIP_RATIO,
) -> TwoPointResult:
    """The dip criterion on a single rod from ``end1`` to ``end2``: applied where
    the two points of a pair ``separation_px`` apart would lie, about the rod's
    centre along its axis.  ``resolved`` means the rod is split."""
    a, b = np.asarray(end1_xy_px, float), np.asarray(end2_xy_px, float)
    length = float(np.hypot(*(b - a)))
    if length == 0:
        raise ValueError("the rod's ends coincide")
    half = 0.5 * separation_px * (b - a) / length
    mid = 0.5 * (a + b)
    p1, p2 = mid - half, mid + half
    return two_point_resolved(
        img,
        (float(p1[0]), float(p1[1])),
        (float(p2[0]), float(p2[1])),
        dip_ratio=dip_ratio,
    )


def two_point_report(
    images: Mapping[str, ArrayLike],
    targets: Sequence[TwoPointTarget],
    *,
    dip_ratio: float = RAYLEIGH_DIP_RATIO,
    background: float | None = None,
) -> dict[str, dict[float, float]]:
    """Fraction of point pairs resolved per separation, for each image.

    Parameters
    ----------
    images : mapping of str to array_like
        Images to compare (model, baselines, reference), all on the grid the
        target coordinates refer to.
    targets : sequence of ((x1, y1), (x2, y2), separation_um)
        Pairs in pixel coordinates; pairs sharing ``separation_um`` are pooled.
    dip_ratio, background : float
        Passed to :func:`two_point_resolved`.

    Returns
    -------
    dict
        ``name -> {separation_um: fraction resolved}``, separations ascending.
    """
    out: dict[str, dict[float, float]] = {}
    for name, img in images.items():
        hits: dict[float, list[bool]] = defaultdict(list)
        for p1, p2, sep in targets:
            r = two_point_resolved(
                img, p1, p2, dip_ratio=dip_ratio, background=background
            )
            hits[float(sep)].append(r.resolved)
        out[name] = {s: float(np.mean(hits[s])) for s in sorted(hits)}
    return out


def smallest_resolved_separation(
    fractions: Mapping[float, float], min_fraction: float = 0.5
) -> float:
    """Smallest separation from which on all pairs groups count as resolved.

    Returns the smallest separation ``s`` such that the fraction resolved is
    at least ``min_fraction`` at ``s`` and at every larger tested separation
    (so an isolated lucky hit below a failure does not count).

    Parameters
    ----------
    fractions : mapping of float to float
        ``separation -> fraction resolved`` (one entry of
        :func:`two_point_report`).
    min_fraction : float
        Fraction needed to call a separation resolved.

    Returns
    -------
    float
        The separation, or ``inf`` if the largest one is not resolved.
    """
    best = float("inf")
    for sep in sorted(fractions, reverse=True):
        if fractions[sep] < min_fraction:
            break
        best = float(sep)
    return best


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for ``z=1.96``) of ``k`` successes in ``n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


class TwoPointTally:
    """Counts per separation and method of the pairs resolved and of the matched
    rods split, the model's dips the reference does not show (``unsupported``),
    and the ideal observer's bound (:meth:`set_ideal`); turned into the
    evaluation's table with :meth:`table` and its flat rows with :meth:`rows`."""

    def __init__(self) -> None:
        self.counts: dict[float, dict[str, list[int]]] = defaultdict(
            lambda: {m: [0, 0] for m in TABLE_METHODS}
        )
        self.rods: dict[float, dict[str, list[int]]] = defaultdict(
            lambda: {m: [0, 0] for m in TABLE_METHODS}
        )
        self.unsupported: dict[float, int] = defaultdict(int)
        self.ideal: dict[float, dict[str, float]] = {}

    def add(self, separation_um: float, resolved: Mapping[str, bool]) -> None:
        """One point pair: ``resolved`` maps each method of ``TABLE_METHODS`` to its outcome."""
        key = round(float(separation_um), 4)
        _count(self.counts[key], resolved)
        if resolved.get("model") and not resolved.get("reference", True):
            self.unsupported[key] += 1

    def add_rod(self, separation_um: float, split: Mapping[str, bool]) -> None:
        """One matched rod: ``split`` maps each method to whether it shows a dip."""
        _count(self.rods[round(float(separation_um), 4)], split)

    def set_ideal(self, per_separation: Mapping[float, dict[str, float]]) -> None:
        """The ideal observer's bound per separation (``ideal_resolvable``'s)."""
        self.ideal = {round(float(s), 4): dict(v) for s, v in per_separation.items()}

    def table(
        self, rayleigh_um: float | None
    ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """``(per_separation, regressions)``.

        A separation is a regression when the model resolves fewer pairs than the
        best baseline (nearest included), resolves more than the reference does
        (dips the reference does not show are not resolution but invention), or
        splits more than ``ROD_SPLIT_LIMIT`` of the matched rods.
        """
        rows: list[dict[str, object]] = []
        regressions: list[dict[str, object]] = []
        for sep in sorted(set(self.counts) | set(self.rods)):
            c = self.counts[sep]
            r = self.rods[sep]
            frac, ci = _fractions(c)
            split, split_ci = _fractions(r)
            inventing = {m: (v or 0.0) > ROD_SPLIT_LIMIT for m, v in split.items()}
            ray = None if not rayleigh_um else round(sep / rayleigh_um, 3)
            reasons = []
            best = max(BASELINE_METHODS, key=lambda m: frac[m] or 0.0)
            if c["model"][1] and (frac["model"] or 0.0) < (frac[best] or 0.0):
                reasons.append(
                    f"model resolves {frac['model']:.0%} of pairs, {best} "
                    f"{frac[best]:.0%}"
                )
            if (
                frac["reference"] is not None
                and (frac["model"] or 0.0) > frac["reference"]
            ):
                reasons.append(
                    f"model resolves {frac['model']:.0%}, the reference only "
                    f"{frac['reference']:.0%}: dips the reference does not show "
                    f"({self.unsupported[sep]} pairs)"
                )
            if inventing["model"]:
                reasons.append(
                    f"model splits {split['model']:.0%} of {r['model'][1]} matched "
                    f"single rods (reference {split['reference'] or 0.0:.0%}): it "
                    "invents dips"
                )
            ideal = self.ideal.get(sep, {})
            row: dict[str, object] = {
                "separation_um": sep,
                "separation_rayleigh": ray,
                "resolved_fraction": frac,
                "ci95": ci,
                "n_pairs": c["model"][1],
                "rods_split_fraction": split,
                "rods_ci95": split_ci,
                "n_rods": r["model"][1],
                "inventing": inventing,
                "ideal_resolvable": ideal.get("resolvable"),
                "ideal": ideal or None,
                "unsupported_dips": self.unsupported[sep],
                "regression": bool(reasons),
            }
            rows.append(row)
            if reasons:
                regressions.append(
                    {
                        "separation_um": sep,
                        "separation_rayleigh": ray,
                        "reason": "; ".join(reasons),
                    }
                )
        return rows, regressions

    @staticmethod
    def rows(per_separation: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        """The table flat, one row per separation and method (``evaluation.json``'s
        ``two_point``): ``pairs_resolved`` and ``rods_split`` are fractions (``None``
        where none was tested), with their 95 % intervals and counts;
        ``ideal_resolvable`` is the ideal observer's bound at
        ``ROD_SPLIT_LIMIT`` rods split, the same for every method."""
        out: list[dict[str, object]] = []
        for r in per_separation:
            frac, ci = r["resolved_fraction"], r["ci95"]
            split, split_ci = r["rods_split_fraction"], r["rods_ci95"]
            for m in TABLE_METHODS:
                out.append(
                    {
                        "separation_rayleigh": r["separation_rayleigh"],
                        "separation_um": r["separation_um"],
                        "method": m,
                        "pairs_resolved": frac[m],  # type: ignore[index]
                        "pairs_resolved_ci95": ci[m],  # type: ignore[index]
                        "n_pairs": r["n_pairs"],
                        "rods_split": split[m],  # type: ignore[index]
                        "rods_split_ci95": split_ci[m],  # type: ignore[index]
                        "n_rods": r["n_rods"],
                        "inventing": r["inventing"][m],  # type: ignore[index]
                        "ideal_resolvable": r["ideal_resolvable"],
                    }
                )
        return out


def _count(row: dict[str, list[int]], outcomes: Mapping[str, bool]) -> None:
    """Add one object's outcome per method to ``row``'s ``[hits, tested]``."""
    for m, ok in outcomes.items():
        row[m][0] += int(ok)
        row[m][1] += 1


def _fractions(
    row: Mapping[str, list[int]],
) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Per method: the fraction of hits (``None`` where none was tested) and its
    95 % Wilson interval."""
    frac = {m: (k / n if n else None) for m, (k, n) in row.items()}
    return frac, {m: list(wilson_interval(k, n)) for m, (k, n) in row.items()}
