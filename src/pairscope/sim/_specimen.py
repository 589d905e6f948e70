"""A deterministic, moving fluorescent specimen in continuous coordinates (µm).

Tubules (mitochondria-like, ~0.3 µm wide) drift, bend, break (fission) and rejoin
(fusion); vesicles wander; static two-point targets (pairs of 100 nm beads at known
separations of 0.5-2 Rayleigh distances) sit in a band free of other structure.
Every quantity is an analytic function of ``(seed, t)``, so any instant can be
recomputed exactly and the ground truth is always available to tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_SEPARATIONS_RAYLEIGH = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
TARGET_ANGLES_DEG = (0.0, 45.0, 90.0, 135.0)
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
    ) -> None:
        self.seed = seed
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
        self._pt_s = np.concatenate([np.linspace(0.0, 1.0, n) for n in counts])
        self._ves_center = np.column_stack(
            [rng.uniform(-e, e, n_vesicles), rng.uniform(-6.0, e, n_vesicles)]
        )
        self._ves_amp = rng.uniform(0.5, 3.0, (n_vesicles, 2))
        self._ves_freq = rng.uniform(0.05, 0.4, (n_vesicles, 2)) * 2 * np.pi
        self._ves_phase = rng.uniform(0, 2 * np.pi, (n_vesicles, 2))
        self._ves_brightness = bead_brightness * rng.uniform(1.0, 4.0, n_vesicles)
        self.bead_brightness = bead_brightness
        self.targets = self._layout_targets(rng)

    def _layout_targets(self, rng: np.random.Generator) -> tuple[TwoPointTarget, ...]:
        """Targets on a grid in the band -22 < y < -14 µm, all separations × angles."""
        targets = []
        xs = np.linspace(-20.0, 20.0, len(TARGET_SEPARATIONS_RAYLEIGH))
        ys = np.linspace(-21.0, -15.0, len(TARGET_ANGLES_DEG))
        for row, angle in enumerate(TARGET_ANGLES_DEG):
            for col, factor in enumerate(TARGET_SEPARATIONS_RAYLEIGH):
                sep = factor * self.rayleigh_um
                cx = xs[col] + rng.uniform(-0.5, 0.5)
                cy = ys[row] + rng.uniform(-0.3, 0.3)
                a = np.deg2rad(angle)
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
        return Emitters(
            np.concatenate([tub_xy, ves_xy, bead_xy]),
            np.concatenate([tub_w, self._ves_brightness, bead_w]),
        )

    def _tubule_points(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Points along every tubule's spine (three parallel lines), vectorised."""
        i, s = self._pt_tubule, self._pt_s
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
