"""Camera-to-camera registration: where the low-dose camera looks on the reference grid.

Convention (all in *reference* pixels, ``c`` the frame centre ``(H-1)/2, (W-1)/2``):
the low-dose camera's unbinned pixel ``p`` sees what reference pixel
``c + scale * (p - c) + shift`` sees.  A low-dose camera displaced by ``+dx`` µm
(the demo's ``OffsetX_um``) therefore has ``shift_x_px = +dx / pixel_um``: its
image shows the specimen moved by ``-dx``.  :func:`apply_registration` resamples
the reference onto the low-dose camera's (unbinned) grid, so that summing
``factor x factor`` blocks of the result matches the low-dose frame.

Estimation works on the low-dose grid (the reference is warped, then sum-binned, the
forward model of charge binning; the low-dose frame is never interpolated): a
Hann-windowed phase correlation with a parabolic peak fit gives a start for every pair,
then a least-squares fit of ``low ≈ a·bin(warp(ref)) + b`` over shift and scale
(Gauss-Newton, ``a, b`` solved in closed form per pair) refines it on all pairs together.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.optimize

from .._binning import bin_sum
from .._files import write_atomic
from .._progress import progress as progress_bar
from .._spline import shift_frame
from . import layout as L
from ._reader import Run, open_run

logger = logging.getLogger(__name__)
#: the magnification ratios the registration may fit (low-dose / reference)
SCALE_RANGE = (0.95, 1.05)

__all__ = [
    "Registration",
    "apply_registration",
    "estimate_registration",
    "load_registration",
    "registration_or_estimate",
    "save_calibration",
    "save_photometry",
]


@dataclass(frozen=True, slots=True)
class Registration:
    """Low-dose camera relative to the reference, in reference pixels (see module doc).

    ``residual_px``: RMS scatter of the independent per-pair phase-correlation shifts
    around the final estimate (a per-pair precision, not the error of the mean).
    """

    shift_y_px: float = 0.0
    shift_x_px: float = 0.0
    scale: float = 1.0
    residual_px: float = 0.0
    n_pairs: int = 0

    @property
    def is_identity(self) -> bool:
        return self.shift_y_px == 0 and self.shift_x_px == 0 and self.scale == 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Registration:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def apply_registration(
    reference: np.ndarray, reg: Registration, factor: int = 1
) -> np.ndarray:
    """Resample ``reference`` onto the low-dose camera's unbinned grid (cubic spline).

    ``factor`` is accepted for symmetry with the callers; the result stays on the
    reference grid (``bin_sum(result, factor)`` is then aligned with the low-dose
    frame).  Pixels that come from outside the frame repeat the nearest edge.  A
    pure shift is applied as its two 1-D filters (:func:`shift_frame`).
    """
    del factor  # the warp is defined on the reference grid
    ref = np.asarray(reference, dtype=np.float32)
    if reg.is_identity:
        return ref
    c = (np.asarray(ref.shape, dtype=float) - 1) / 2
    shift = np.array([reg.shift_y_px, reg.shift_x_px])
    if reg.scale == 1:
        return shift_frame(ref, -shift)
    offset = c - reg.scale * c + shift
    return ndi.affine_transform(
        ref, np.array([reg.scale, reg.scale]), offset=offset, order=3, mode="nearest"
    )


def _phase_correlation_sum(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Shift ``s`` (y, x) with ``a(p) ≈ b(p + s)`` for all pairs ``(a, b)``.

    The cross-power spectra are summed over pairs, then whitened; the correlation
    peak is refined by a parabola through its neighbours on each axis.
    """
    shape = pairs[0][0].shape
    win = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    cross = np.zeros(shape, dtype=complex)
    for a, b in pairs:
        fa = np.fft.fft2((a - a.mean()) * win)
        fb = np.fft.fft2((b - b.mean()) * win)
        cross += fb * np.conj(fa)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape))
    out = np.empty(2)
    for ax in range(2):
        n = shape[ax]
        idx = [int(peak[0]), int(peak[1])]
        vals = []
        for d in (-1, 0, 1):
            idx[ax] = (int(peak[ax]) + d) % n
            vals.append(corr[idx[0], idx[1]])
        den = vals[0] - 2 * vals[1] + vals[2]
        frac = 0.5 * (vals[0] - vals[2]) / den if den != 0 else 0.0
        p = peak[ax] + frac
        out[ax] = p - n if p > n / 2 else p
    return -out  # the peak sits at -s for a(p) = b(p + s)


def _affine_residuals(low: np.ndarray, model: np.ndarray, margin: int) -> np.ndarray:
    """``low - (a·model + b)`` inside ``margin``, ``a, b`` by least squares."""
    sl = (slice(margin, -margin or None),) * 2
    x, y = model[sl].ravel(), low[sl].ravel()
    x = x - x.mean()
    y = y - y.mean()
    sxx = float(x @ x)
    a = float(x @ y) / sxx if sxx > 0 else 0.0
    return y - a * x


def _pairs(run: Run, max_pairs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = run.same_instant_pairs()  # only frames of one instant show the cameras
    if not idx:
        idx = run.with_reference()
        if not idx:
            raise ValueError(
                f"{run.path}: no pair has a reference frame to register to"
            )
        logger.warning(
            "%s: no pair's frames are of one instant (sequential or alternating "
            "pairs): specimen motion between the two frames enters the estimated "
            "camera shift. Calibrate on a run acquired in triggered or simultaneous "
            "mode.",
            run.path,
        )
    take = np.unique(np.linspace(0, len(idx) - 1, min(max_pairs, len(idx))).round())
    out = []
    for k in take.astype(int):
        p = run[idx[k]]
        assert p.lowdose is not None and p.reference is not None  # with_reference
        out.append((p.lowdose.astype(np.float32), p.reference.astype(np.float32)))
    return out


def _warp(coeffs: np.ndarray, sy: float, sx: float, scale: float) -> np.ndarray:
    """:func:`apply_registration` on precomputed cubic-spline coefficients."""
    c = (np.asarray(coeffs.shape, dtype=float) - 1) / 2
    offset = c - scale * c + np.array([sy, sx])
    return ndi.affine_transform(
        coeffs,
        np.array([scale, scale]),
        offset=offset,
        order=3,
        mode="nearest",
        prefilter=False,
    )


def _fit(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    f: int,
    margin: int,
    scale: float | None,
) -> np.ndarray:
    """Least-squares fit of shift (and log scale if ``scale is None``).

    Bounded Gauss-Newton (scipy's trust-region reflective least squares, the
    scale within :data:`SCALE_RANGE`) on the residuals with ``a, b`` projected
    out per pair: a handful of warps per pair, where a simplex search needs ~50.
    """

    def residuals(x: np.ndarray) -> np.ndarray:
        s = float(np.exp(x[2])) if scale is None else scale
        return np.concatenate(
            [
                _affine_residuals(low, bin_sum(_warp(co, x[0], x[1], s), f), margin)
                for low, co in pairs
            ]
        )

    lower = [-np.inf, -np.inf, math.log(SCALE_RANGE[0])][: x0.size]
    upper = [np.inf, np.inf, math.log(SCALE_RANGE[1])][: x0.size]
    res = scipy.optimize.least_squares(
        residuals,
        x0,
        method="trf",
        bounds=(lower, upper),
        x_scale=np.array([1.0, 1.0, 0.01][: x0.size]),
        diff_step=1e-4,
        xtol=1e-4,
        ftol=1e-10,
    )
    x = np.asarray(res.x)
    if scale is None and not _inside_scale_range(float(np.exp(x[2]))):
        raise ValueError(
            f"the cameras' fitted magnification ratio sits at the edge of its range, "
            f"{float(np.exp(x[2])):.3f} (allowed {SCALE_RANGE[0]}-{SCALE_RANGE[1]}): "
            "check that both cameras image the same field (or calibrate without "
            "the scale fit)"
        )
    return x


def _inside_scale_range(scale: float) -> bool:
    """Strictly inside the fit's range: a fit that ends on its edge found no
    magnification the images agree on."""
    lo, hi = SCALE_RANGE
    return lo * 1.001 < scale < hi / 1.001


def estimate_registration(
    run: Run | str | Path,
    *,
    max_pairs: int = 20,
    fit_scale: bool = True,
    scale_pairs: int = 4,
    progress: bool = False,
) -> Registration:
    """Estimate the shift (and scale, 0.95–1.05) of the low-dose camera (module doc).

    1. phase correlation of the cross-power spectrum summed over up to ``max_pairs``
       pairs (one low-dose frame is too noisy on its own) gives a start;
    2. if ``fit_scale``, shift and scale are fitted jointly on ``scale_pairs`` pairs;
    3. the shift is refitted on every pair with that scale; the result is their mean
       and ``residual_px`` their RMS scatter.
    """
    run = run if isinstance(run, Run) else open_run(run)
    return registration_from_pairs(
        _pairs(run, max_pairs),
        run.factor,
        fit_scale=fit_scale,
        scale_pairs=scale_pairs,
        progress=progress,
    )


def registration_from_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    factor: int,
    *,
    fit_scale: bool = True,
    scale_pairs: int = 4,
    progress: bool = False,
) -> Registration:
    """:func:`estimate_registration` on ``(lowdose, reference)`` float32 arrays.

    Frames without structure (blank, e.g. DemoCamera's ``FastImage 1``, or flat)
    fit any shift "perfectly": they are refused, never stored as a registration.
    """
    pairs = [(low, ref) for low, ref in pairs if _has_structure(low, ref)]
    if not pairs:
        raise ValueError(
            "the frames have no structure (blank or flat), so the cameras cannot "
            "be registered from them; check that the cameras deliver images"
        )
    f = factor
    start = _phase_correlation_sum([(low, bin_sum(ref, f)) for low, ref in pairs]) * f
    coeffs = [(low, ndi.spline_filter(ref, order=3)) for low, ref in pairs]
    margin = math.ceil(float(np.abs(start).max()) / f) + 3
    scale = 1.0
    if fit_scale:
        step = max(1, math.ceil(len(coeffs) / scale_pairs))
        x = _fit(coeffs[::step], np.array([*start, 0.0]), f, margin, None)
        start, scale = x[:2], float(np.exp(x[2]))
    per_pair = progress_bar(
        coeffs, desc="registering pairs", unit="pair", disable=not progress
    )
    shifts = np.array([_fit([p], start, f, margin, scale) for p in per_pair])
    sy, sx = shifts.mean(axis=0)
    resid = float(np.sqrt(np.mean(np.sum((shifts - [sy, sx]) ** 2, axis=1))))
    return Registration(float(sy), float(sx), scale, resid, len(pairs))


def _has_structure(*frames: np.ndarray) -> bool:
    return all(
        float(np.std(a)) > 1e-6 * max(1.0, abs(float(np.mean(a)))) for a in frames
    )


def save_calibration(
    run_path: str | Path, reg: Registration, *, source: str | None = None
) -> Path:
    """Write ``calibration.json`` into the run folder atomically; return its path.

    ``source`` (optional) says what estimated the registration.
    """
    data: dict[str, Any] = {
        "registration": asdict(reg),
        "convention": __doc__.split("\n\n")[1],
    }
    if source is not None:
        data["source"] = source
    # what else was measured (the cameras' photometry) stays
    return _write_calibration(run_path, data, keep=("photometry",))


def save_photometry(run_path: str | Path, photometry: dict[str, Any]) -> Path:
    """Store the cameras' measured photometry (per role, as JSON) in the run's
    ``calibration.json``, beside the registration; return its path."""
    return _write_calibration(run_path, {"photometry": photometry}, keep=None)


def _write_calibration(
    run_path: str | Path, data: dict[str, Any], *, keep: tuple[str, ...] | None
) -> Path:
    """Write ``data`` as ``calibration.json`` atomically, with the ``keep`` keys of
    the file there (``None``: all of them) that ``data`` does not replace."""
    path = Path(run_path) / L.CALIBRATION
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    merged = {k: v for k, v in old.items() if keep is None or k in keep}
    merged.update(data)
    write_atomic(path, json.dumps(merged, indent=2).encode())
    return path


def load_registration(run: Run | str | Path) -> Registration | None:
    """The run's saved :class:`Registration`, or ``None`` if it has none."""
    run = run if isinstance(run, Run) else open_run(run)
    cal = run.calibration
    if not cal or "registration" not in cal:
        return None
    return Registration.from_dict(cal["registration"])


def registration_or_estimate(run: Run | str | Path) -> Registration:
    """The run's stored registration, else one estimated now (with a warning that
    ``pairscope calibrate`` would store it)."""
    run = run if isinstance(run, Run) else open_run(run)
    reg = load_registration(run)
    if reg is None:
        logger.warning(
            "%s has no calibration: estimating the camera registration now. Run "
            "'pairscope calibrate %s' to store it with the run.",
            run.path,
            run.path,
        )
        reg = estimate_registration(run)
    return reg
