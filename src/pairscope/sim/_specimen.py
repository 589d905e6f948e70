"""A deterministic, moving fluorescent specimen in continuous coordinates (µm).

Tubules (mitochondria-like, ~0.3 µm wide) drift, bend, break (fission) and rejoin
(fusion); vesicles wander; static two-point targets (pairs of 100 nm beads at known
separations of 0.5-2 Rayleigh distances) sit in a band free of other structure, their
angles and positions drawn per seed (so a fresh seed shows a geometry no model saw).
Beside every pair lies its control, a matched single object: a straight rod
``ROD_LENGTH_OVER_SEPARATION`` times the pair's separation long (a uniform rod of
that length has the pair's second moment, so in a blurred frame it looks like the
pair), as bright as the pair's two beads together.  A method that shows a dip in a
rod splits a single object in two: it invents.
Every quantity is an analytic function of ``(seed, t)``, so any instant can be
recomputed exactly and the ground truth is always available to tests.

Kinds: ``"cells"`` (the default: tubules, vesicles and the target band) and
``"beads"``, a bead slide: no tubules or vesicles, the target band as in
``"cells"``, and elsewhere a static field of ``BEAD_FIELD_OBJECTS`` objects, as many
single beads as bead pairs (``BEAD_FIELD_SEPARATIONS_RAYLEIGH`` apart) and single
rods as long as matched rods of the same separations, every bead
``BEAD_SLIDE_BRIGHTNESS`` bright (five times the cells' beads: a bead slide is
bright).  It is the specimen a user fine-tunes on to give a model their sample's
prior (issue 23).

Scenarios (drills for the live trust monitor): ``"unseen-structure"`` adds, from
``scenario_onset_s`` on, structure families the demo model never saw near the
resolution limit: a dense square lattice of beads (pitch 1.1 Rayleigh), a fine
grating of lines (period 1.2 Rayleigh) and rings (radius 1-1.5 Rayleigh), in patches
near the field centre (within ±5 µm, so even a 128-pixel sensor sees them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._targets import ROD_LENGTH_OVER_SEPARATION

TARGET_SEPARATIONS_RAYLEIGH = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
TARGET_ROWS = 4  # pairs per separation, each at its own random angle
ROD_OFFSET_X_UM = 4.0  # a rod sits halfway between its pair and the next column
#: the target band's columns (one per separation), µm
TARGET_COLUMNS_UM = np.linspace(-20.0, 20.0, len(TARGET_SEPARATIONS_RAYLEIGH))
SCENARIOS = ("none", "unseen-structure")
KINDS = ("cells", "beads")
BEAD_FIELD_OBJECTS = 900  # in -extent < x < extent, -6 < y < extent µm
BEAD_FIELD_SEPARATIONS_RAYLEIGH = (0.75, 2.5)  # pairs and rods, uniform in between
BEAD_SLIDE_BRIGHTNESS = 200.0  # photons per ms per bead at full light
TUBULE_SAMPLE_UM = 0.025
TUBULE_LINE_OFFSETS_UM = (-0.1, 0.0, 0.1)  # three lines give a ~0.3 µm wide tubule


@dataclass(frozen=True, slots=True)
class TwoPointTarget:
    """Two point emitters at a known separation (µm, specimen coordinates)."""

    p1_um: tuple[float, float]
    p2_um: tuple[float, float]
    separation_um: float
    separation_rayleigh: float


@dataclass(frozen=True, slots=True)
class Rod:
    """A matched single object: a uniform straight rod from ``p1_um`` to ``p2_um``
    (µm, specimen coordinates), the control of the pairs at ``separation_um``."""

    p1_um: tuple[float, float]
    p2_um: tuple[float, float]
    separation_um: float
    separation_rayleigh: float


@dataclass(frozen=True, slots=True)
class Emitters:
    """Point emitters at one instant: positions (N, 2) as (x, y) µm and weights."""

    xy_um: np.ndarray
    weights: np.ndarray


class Specimen:
    """The simulated sample.  Brightness is in photons per ms at full light power.

    Parameters
    ----------
    seed
        Everything (layout, motion, events) follows from it.
    rayleigh_um
        Sets the target separations.
    extent_um
        Half-width of the square region populated with structures.
    scenario
        ``None``/``"none"``, or ``"unseen-structure"`` (module doc).
    scenario_onset_s
        Specimen time from which the scenario's structures are present.
    matched_rods
        Whether the pairs' control rods are present (runs acquired before they
        existed are rebuilt without them).
    kind
        ``"cells"`` or ``"beads"`` (module doc).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        rayleigh_um: float = 0.264,
        extent_um: float = 40.0,
        n_tubules: int = 90,
        n_vesicles: int = 220,
        tubule_brightness: float = 200.0,
        bead_brightness: float = 40.0,
        scenario: str | None = None,
        scenario_onset_s: float = 0.0,
        matched_rods: bool = True,
        kind: str = "cells",
    ) -> None:
        scenario = scenario or "none"
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; use one of {SCENARIOS}")
        if kind not in KINDS:
            raise ValueError(f"unknown specimen {kind!r}; use one of {KINDS}")
        self.kind = kind
        if kind == "beads":
            n_tubules = n_vesicles = 0
            bead_brightness = BEAD_SLIDE_BRIGHTNESS
        self.seed = seed
        self.scenario = scenario
        self.scenario_onset_s = float(scenario_onset_s)
        self.rayleigh_um = rayleigh_um
        rng = np.random.default_rng(seed)
        e = extent_um
        # structures live above the target band (y < -10 µm holds only the beads)
        self._tub_center = np.column_stack(
            [rng.uniform(-e, e, n_tubules), rng.uniform(-6.0, e, n_tubules)]
        )
        self._tub_angle = rng.uniform(0, np.pi, n_tubules)
        self._tub_length = rng.uniform(3.0, 10.0, n_tubules)
        self._tub_bend = rng.uniform(0.3, 1.0, n_tubules)
        self._tub_bend_freq = rng.uniform(0.2, 0.8, (n_tubules,)) * 2 * np.pi
        self._tub_phase = rng.uniform(0, 2 * np.pi, (n_tubules, 4))
        self._tub_drift = rng.uniform(0.5, 1.5, (n_tubules, 2))
        self._tub_drift_freq = rng.uniform(0.05, 0.2, (n_tubules, 2)) * 2 * np.pi
        self._tub_break_at = rng.uniform(0.25, 0.75, n_tubules)
        self._tub_break_freq = rng.uniform(0.05, 0.25, n_tubules) * 2 * np.pi
        self._tub_brightness = tubule_brightness * rng.uniform(0.6, 1.4, n_tubules)
        counts = np.maximum((self._tub_length / TUBULE_SAMPLE_UM).astype(int), 2)
        self._pt_tubule = np.repeat(np.arange(n_tubules), counts)
        self._pt_s = np.concatenate(
            [np.zeros(0), *(np.linspace(0, 1, n) for n in counts)]
        )
        self._ves_center = np.column_stack(
            [rng.uniform(-e, e, n_vesicles), rng.uniform(-6.0, e, n_vesicles)]
        )
        self._ves_amp = rng.uniform(0.5, 3.0, (n_vesicles, 2))
        self._ves_freq = rng.uniform(0.05, 0.4, (n_vesicles, 2)) * 2 * np.pi
        self._ves_phase = rng.uniform(0, 2 * np.pi, (n_vesicles, 2))
        self._ves_brightness = bead_brightness * rng.uniform(1.0, 4.0, n_vesicles)
        self.bead_brightness = bead_brightness
        self.targets = self._layout_targets(rng)
        self.rods = self._layout_rods() if matched_rods else ()
        self._rod_xy, self._rod_w = self._rod_points()
        self._field = (
            _bead_field(seed, rayleigh_um, bead_brightness, extent_um)
            if kind == "beads"
            else Emitters(np.zeros((0, 2)), np.zeros(0))
        )
        self._unseen = (
            _unseen_structures(seed, rayleigh_um, bead_brightness)
            if scenario == "unseen-structure"
            else None
        )

    def scenario_active(self, t: float) -> bool:
        """Whether the scenario's structures are present at time ``t`` (s)."""
        return self._unseen is not None and t >= self.scenario_onset_s

    def _layout_targets(self, rng: np.random.Generator) -> tuple[TwoPointTarget, ...]:
        """Targets in the band -22 < y < -14 µm: every separation ``TARGET_ROWS``
        times, each pair at a random angle and jittered position (per seed)."""
        targets = []
        xs = TARGET_COLUMNS_UM
        ys = np.linspace(-21.0, -15.0, TARGET_ROWS)
        angles = rng.uniform(0.0, 180.0, (TARGET_ROWS, len(xs)))
        jitter = rng.uniform(-1.0, 1.0, (TARGET_ROWS, len(xs), 2)) * (1.5, 0.5)
        for row in range(TARGET_ROWS):
            for col, factor in enumerate(TARGET_SEPARATIONS_RAYLEIGH):
                sep = factor * self.rayleigh_um
                cx = xs[col] + jitter[row, col, 0]
                cy = ys[row] + jitter[row, col, 1]
                a = np.deg2rad(angles[row, col])
                d = 0.5 * sep * np.array([np.cos(a), np.sin(a)])
                targets.append(
                    TwoPointTarget(
                        (float(cx - d[0]), float(cy - d[1])),
                        (float(cx + d[0]), float(cy + d[1])),
                        float(sep),
                        float(factor),
                    )
                )
        return tuple(targets)

    def _layout_rods(self) -> tuple[Rod, ...]:
        """One rod per pair, ``ROD_OFFSET_X_UM`` to the right of the pair's column,
        at its own random angle (own RNG stream: the rest of the specimen is the same
        with and without rods)."""
        rng = np.random.default_rng((self.seed, 0x70D5))
        rods = []
        # targets are laid out row by row; a rod goes by its pair's column, not the
        # pair's jittered position, so it keeps 2 µm from every pair
        columns = np.tile(TARGET_COLUMNS_UM, TARGET_ROWS)
        for tg, column in zip(self.targets, columns, strict=True):
            cy = 0.5 * (tg.p1_um[1] + tg.p2_um[1])
            x = column + ROD_OFFSET_X_UM + rng.uniform(-0.5, 0.5)
            y = cy + rng.uniform(-0.3, 0.3)
            a = rng.uniform(0.0, np.pi)
            half = 0.5 * ROD_LENGTH_OVER_SEPARATION * tg.separation_um
            d = half * np.array([np.cos(a), np.sin(a)])
            rods.append(
                Rod(
                    (float(x - d[0]), float(y - d[1])),
                    (float(x + d[0]), float(y + d[1])),
                    tg.separation_um,
                    tg.separation_rayleigh,
                )
            )
        return tuple(rods)

    def _rod_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Every rod as points about ``TUBULE_SAMPLE_UM`` apart, each rod as bright as
        two beads."""
        if not self.rods:
            return np.zeros((0, 2)), np.zeros(0)
        rods = [
            _rod_emitters(
                np.asarray(r.p1_um), np.asarray(r.p2_um), self.bead_brightness
            )
            for r in self.rods
        ]
        return np.concatenate([xy for xy, _ in rods]), np.concatenate(
            [w for _, w in rods]
        )

    def tubule_gap_open(self, t: float) -> np.ndarray:
        """Which tubules are broken (fission) at time ``t`` (s)."""
        return np.sin(self._tub_break_freq * t + self._tub_phase[:, 3]) > 0.5

    def emitters(self, t: float) -> Emitters:
        """All point emitters of the specimen at time ``t`` (seconds)."""
        tub_xy, tub_w = self._tubule_points(t)
        ves_xy = self._ves_center + self._ves_amp * np.sin(
            self._ves_freq * t + self._ves_phase
        )
        bead_xy = np.array([p for tg in self.targets for p in (tg.p1_um, tg.p2_um)])
        bead_w = np.full(len(bead_xy), self.bead_brightness)
        xy = [tub_xy, ves_xy, bead_xy, self._rod_xy, self._field.xy_um]
        w = [tub_w, self._ves_brightness, bead_w, self._rod_w, self._field.weights]
        if self._unseen is not None and self.scenario_active(t):
            xy.append(self._unseen.xy_um)
            w.append(self._unseen.weights)
        return Emitters(np.concatenate(xy), np.concatenate(w))

    def _tubule_points(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Points along every tubule's spine (three parallel lines), vectorised."""
        i, s = self._pt_tubule, self._pt_s
        if len(i) == 0:  # a bead slide
            return np.zeros((0, 2)), np.zeros(0)
        center = self._tub_center + self._tub_drift * np.sin(
            self._tub_drift_freq * t + self._tub_phase[:, :2]
        )
        angle = self._tub_angle + 0.15 * np.sin(0.3 * t + self._tub_phase[:, 2])
        bend = self._tub_bend * np.sin(self._tub_bend_freq * t)
        length = self._tub_length[i]
        keep = ~self.tubule_gap_open(t)[i] | (
            np.abs(s - self._tub_break_at[i]) * length > 0.35
        )
        i, s, length = i[keep], s[keep], length[keep]
        u = np.column_stack([np.cos(angle[i]), np.sin(angle[i])])
        normal = np.column_stack([-u[:, 1], u[:, 0]])
        along = ((s - 0.5) * length)[:, None]
        lateral = (bend[i] * np.sin(np.pi * s))[:, None]
        spine = center[i] + along * u + lateral * normal
        offsets = np.asarray(TUBULE_LINE_OFFSETS_UM)[:, None, None]
        xy = (spine[None] + offsets * normal[None]).reshape(-1, 2)
        w = self._tub_brightness[i] * TUBULE_SAMPLE_UM / len(TUBULE_LINE_OFFSETS_UM)
        return xy, np.tile(w, len(TUBULE_LINE_OFFSETS_UM))


def _bead_field(
    seed: int, rayleigh_um: float, brightness: float, extent_um: float
) -> Emitters:
    """A bead slide's static field (module doc), own RNG stream: single beads, bead
    pairs and single rods in equal numbers, at random angles, about a Rayleigh
    distance or more apart from each other (positions on a jittered grid)."""
    rng = np.random.default_rng((seed, 0xBEAD))
    e = extent_um
    area = 2 * e * (e + 6.0)
    pitch = float(np.sqrt(area / BEAD_FIELD_OBJECTS))
    gx, gy = np.meshgrid(np.arange(-e, e, pitch), np.arange(-6.0, e, pitch))
    centres = np.column_stack([gx.ravel(), gy.ravel()]) + pitch / 2
    centres += rng.uniform(-0.2, 0.2, centres.shape) * pitch
    lo, hi = BEAD_FIELD_SEPARATIONS_RAYLEIGH
    xy: list[np.ndarray] = []
    w: list[np.ndarray] = []
    for k, c in enumerate(centres):
        a = rng.uniform(0.0, np.pi)
        u = np.array([np.cos(a), np.sin(a)])
        sep = rng.uniform(lo, hi) * rayleigh_um
        if k % 3 == 0:  # a single bead
            xy.append(c[None])
            w.append(np.array([brightness]))
        elif k % 3 == 1:  # a bead pair
            xy.append(np.stack([c - 0.5 * sep * u, c + 0.5 * sep * u]))
            w.append(np.full(2, brightness))
        else:  # a single rod, as bright as a pair
            half = 0.5 * ROD_LENGTH_OVER_SEPARATION * sep * u
            rod_xy, rod_w = _rod_emitters(c - half, c + half, brightness)
            xy.append(rod_xy)
            w.append(rod_w)
    return Emitters(np.concatenate(xy), np.concatenate(w))


def _rod_emitters(
    p1: np.ndarray, p2: np.ndarray, bead_brightness: float
) -> tuple[np.ndarray, np.ndarray]:
    """A straight rod from ``p1`` to ``p2`` (µm) as points about
    ``TUBULE_SAMPLE_UM`` apart, as bright as two beads: positions and weights."""
    n = max(int(np.ceil(np.hypot(*(p2 - p1)) / TUBULE_SAMPLE_UM)), 2)
    t = (np.arange(n) + 0.5) / n
    return p1 + np.outer(t, p2 - p1), np.full(n, 2.0 * bead_brightness / n)


def _unseen_structures(seed: int, rayleigh_um: float, brightness: float) -> Emitters:
    """A lattice, a grating and rings near the field centre (own RNG stream, so the
    rest of the specimen is the same with and without the scenario)."""
    rng = np.random.default_rng((seed, 0x5CE9))
    centres = np.array([[-3.0, -2.5], [2.5, -2.0], [0.0, 3.0]])
    centres += rng.uniform(-1.0, 1.0, centres.shape)
    parts: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    # dense square lattice, 3 x 3 µm, rotated
    pitch = 1.1 * rayleigh_um
    g = np.arange(-1.5, 1.5 + 1e-9, pitch)
    gx, gy = np.meshgrid(g, g)
    parts.append(_rotate(np.column_stack([gx.ravel(), gy.ravel()]), rng) + centres[0])
    weights.append(np.full(gx.size, 3.0 * brightness))
    # grating: lines 3 µm long, period 1.2 Rayleigh, sampled densely
    period = 1.2 * rayleigh_um
    ys = np.arange(-1.5, 1.5 + 1e-9, period)
    xs = np.arange(-1.5, 1.5 + 1e-9, TUBULE_SAMPLE_UM)
    lx, ly = np.meshgrid(xs, ys)
    parts.append(_rotate(np.column_stack([lx.ravel(), ly.ravel()]), rng) + centres[1])
    weights.append(np.full(lx.size, 500.0 * TUBULE_SAMPLE_UM))
    # rings of radius 1-1.5 Rayleigh on a 3 x 3 grid
    ring_centres = np.column_stack(
        [c.ravel() for c in np.meshgrid(*[(-1.0, 0, 1.0)] * 2)]
    )
    for rc in ring_centres:
        r = rayleigh_um * rng.uniform(1.0, 1.5)
        n = max(int(2 * np.pi * r / TUBULE_SAMPLE_UM), 8)
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        parts.append(centres[2] + rc + r * np.column_stack([np.cos(a), np.sin(a)]))
        weights.append(np.full(n, 500.0 * TUBULE_SAMPLE_UM))
    return Emitters(np.concatenate(parts), np.concatenate(weights))


def _rotate(xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return xy @ rot.T
