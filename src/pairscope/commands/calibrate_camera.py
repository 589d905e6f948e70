"""``pairscope calibrate-camera RIG``: each camera's conversion gain (e⁻/ADU),
offset and read noise by photon transfer (EMVA 1288) from a dark series and a
flat series at a few exposures, stored beside the rig file for every later run.

The dark series is taken with the light off (the primary core's shutter closed,
autoshutter off, plus the rig file's ``camera_calibration.dark`` settings), the
flats with the shutter open on a uniform specimen (plus
``camera_calibration.flat``).  Every setting changed is put back afterwards,
whatever happens.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from pymmcore_plus import CMMCorePlus

    from ..acquire import RigState
    from ..hardware import Rig, RigCore
    from ..rig import DeclaredPhotometry, Photometry

DEFAULT_EXPOSURES_MS = (5.0, 10.0, 20.0, 40.0)
MIN_LEVELS = 3
ROLES = ("lowdose", "reference")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate-camera",
        help="measure each camera's e-/ADU, offset and read noise (dark and flat "
        "series, photon transfer); stored beside the rig file for later runs",
        description="Measure each camera's photometry by photon transfer (EMVA "
        "1288): a dark series with the shutter closed and a flat series at each "
        "exposure on a uniform specimen. The result is stored beside the rig file "
        "(<rig>.photometry.json): every later run on the rig records it (source "
        "'measured') for a camera the rig file declares no photometry for, with a "
        "photon-transfer plot (.png) beside it.",
    )
    p.add_argument("rig", type=Path, metavar="RIG", help="a rig file (.yaml)")
    p.add_argument(
        "--role",
        choices=(*ROLES, "both"),
        default="both",
        help="which camera to measure (default both)",
    )
    p.add_argument(
        "--exposures",
        type=float,
        nargs="+",
        metavar="MS",
        default=list(DEFAULT_EXPOSURES_MS),
        help="flat-series exposures in ms, at least 3; the dark series uses the "
        "shortest (default 5 10 20 40)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=2,
        metavar="N",
        help="frames of the dark series and of each exposure, at least 2 (default 2)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="the result file (default: <rig stem>.photometry.json beside the rig "
        "file, which runs on the rig read)",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="start at once: do not wait for Enter (the specimen is in place)",
    )
    p.set_defaults(func=_cmd_calibrate_camera)


# -- the series ---------------------------------------------------------------


@dataclass
class CameraSeries:
    """One camera's dark frames and flat frames per exposure."""

    role: str
    label: str
    camera_model: str | None
    binning: int
    exposures_ms: tuple[float, ...]
    #: the camera's top value (2^bit depth - 1): a flat reaching it is saturated
    saturation_adu: int | None = None
    dark: list[np.ndarray] = field(default_factory=list)
    flats: list[list[np.ndarray]] = field(default_factory=list)


Setting = tuple["CMMCorePlus", str, str, str]  # core, device, property, value


def check_exposures(exposures_ms: Sequence[float], frames: int) -> tuple[float, ...]:
    """The flat-series exposures, sorted; refused unless ≥ 3 distinct and > 0."""
    bad = [e for e in exposures_ms if not (math.isfinite(e) and e > 0)]
    if bad:
        raise ValueError(f"exposures must be positive milliseconds; got {bad[0]:g}")
    levels = tuple(sorted(set(exposures_ms)))
    if len(levels) < MIN_LEVELS:
        raise ValueError(
            f"the photon-transfer fit needs at least {MIN_LEVELS} different exposures; "
            f"got {len(levels)} (e.g. --exposures 5 10 20 40)"
        )
    if frames < 2:
        raise ValueError(
            f"--frames must be at least 2 (a frame difference); got {frames}"
        )
    return levels


def _cameras(rig: Rig, roles: Sequence[str]) -> list[RigCore]:
    cams = [next((rc for rc in rig.cores if rc.role == r), None) for r in roles]
    found = [rc for rc in cams if rc is not None]
    if not found:
        raise ValueError(f"this rig has no {' or '.join(roles)} camera")
    return found


def _resolve(
    rig: Rig, settings: Sequence[tuple[str, str, Any]], what: str
) -> list[Setting]:
    """The rig file's ``camera_calibration`` settings, each on the core holding its
    device, checked against what the device allows (nothing is changed here)."""
    out: list[Setting] = []
    for device, prop, raw in settings:
        value = str(raw)
        core = next(
            (rc.core for rc in rig.cores if device in rc.core.getLoadedDevices()), None
        )
        where = f"the rig file's camera_calibration.{what} setting {device}.{prop}"
        if core is None:
            raise ValueError(f"{where}: no core of this rig has a device {device!r}")
        if not core.hasProperty(device, prop):
            raise ValueError(f"{where}: device {device!r} has no property {prop!r}")
        if core.isPropertyReadOnly(device, prop):
            raise ValueError(f"{where}: the property is read-only")
        allowed = core.getAllowedPropertyValues(device, prop)
        if allowed and value not in allowed:
            raise ValueError(f"{where}: {value!r} is not one of {list(allowed)}")
        if core.hasPropertyLimits(device, prop):
            lo = core.getPropertyLowerLimit(device, prop)
            hi = core.getPropertyUpperLimit(device, prop)
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not a number") from None
            if not lo <= number <= hi:
                raise ValueError(f"{where}: {value} is outside {lo:g} to {hi:g}")
        out.append((core, device, prop, value))
    return out


def _check_camera_exposures(rc: RigCore, exposures_ms: Sequence[float]) -> None:
    core, cam = rc.core, rc.camera
    if core.hasPropertyLimits(cam, "Exposure"):
        lo = core.getPropertyLowerLimit(cam, "Exposure")
        hi = core.getPropertyUpperLimit(cam, "Exposure")
        for e in exposures_ms:
            if not lo <= e <= hi:
                raise ValueError(
                    f"camera {cam!r} ({rc.role}) refuses a {e:g} ms exposure (it "
                    f"allows {lo:g} to {hi:g} ms): choose --exposures in that range"
                )


def _set_exposure(rc: RigCore, ms: float) -> None:
    try:
        rc.core.setExposure(rc.camera, ms)
        got = rc.core.getExposure(rc.camera)
    except RuntimeError as exc:
        raise ValueError(
            f"camera {rc.camera!r} ({rc.role}) refuses a {ms:g} ms exposure: "
            f"{_words(exc)}"
        ) from None
    if abs(got - ms) > 0.01 * ms + 1e-3:
        raise ValueError(
            f"camera {rc.camera!r} ({rc.role}) refuses a {ms:g} ms exposure (it "
            f"stays at {got:g} ms): choose --exposures the camera takes"
        )


def _words(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _set(core: CMMCorePlus, device: str, prop: str, value: str) -> None:
    from ..errors import ConfigError

    try:
        core.setProperty(device, prop, value)
    except RuntimeError as exc:
        raise ConfigError(
            f"{device} refuses {prop} = {value!r}: {_words(exc)}"
        ) from None


def _apply(settings: Sequence[Setting]) -> None:
    for core, device, prop, value in settings:
        _set(core, device, prop, value)


def _capture(rig: Rig, settings: Sequence[Setting]) -> RigState:
    """What the calibration changes, as found: every core's camera and shutter, the
    cameras' exposures and the rig file's calibration settings."""
    from ..acquire import RigState

    state = RigState()
    for rc in rig.cores:
        core = rc.core
        state.cameras.append((core, core.getCameraDevice()))
        state.exposures.append((core, rc.camera, core.getExposure(rc.camera)))
        shutter = core.getShutterDevice()
        if shutter:
            state.shutters.append(
                (core, shutter, core.getShutterOpen(shutter), core.getAutoShutter())
            )
    seen: set[tuple[int, str, str]] = set()
    for core, device, prop, _ in settings:
        if (id(core), device, prop) not in seen:
            seen.add((id(core), device, prop))
            state.properties.append(
                (core, device, prop, core.getProperty(device, prop))
            )
    return state


def _put_back(state: RigState, settings: Sequence[Setting]) -> None:
    """The found values of ``settings`` (one series' settings, before the next)."""
    keys = {(id(c), d, p) for c, d, p, _ in settings}
    for core, device, prop, value in state.properties:
        if (id(core), device, prop) in keys:
            _set(core, device, prop, value)


def _light(rig: Rig, on: bool) -> None:
    """The primary core's shutter open (flats) or closed (darks), autoshutter off."""
    from ..errors import ConfigError

    core = rig.primary.core
    shutter = core.getShutterDevice()
    if shutter:
        try:
            core.setAutoShutter(False)
            core.setShutterOpen(shutter, on)
        except RuntimeError as exc:
            what = "open" if on else "close"
            raise ConfigError(
                f"shutter {shutter!r} does not {what}: {_words(exc)}"
            ) from None


def _snap(rc: RigCore) -> np.ndarray:
    import numpy as np

    from ..errors import PairscopeError

    core = rc.core
    try:
        if core.getCameraDevice() != rc.camera:
            core.setCameraDevice(rc.camera)
        core.snapImage()
        return np.array(core.getImage(), copy=True)
    except RuntimeError as exc:
        raise PairscopeError(
            f"camera {rc.camera!r} ({rc.role}) delivered no frame: {_words(exc)}"
        ) from None


def _top(rc: RigCore) -> int | None:
    """The camera's top pixel value from its bit depth (None where unknown)."""
    try:
        core = rc.core
        if core.getCameraDevice() != rc.camera:
            core.setCameraDevice(rc.camera)
        bits = int(core.getImageBitDepth())
    except Exception:  # a camera that cannot say: the fit's own check remains
        return None
    return 2**bits - 1 if 0 < bits <= 32 else None


def _binning(rc: RigCore) -> int:
    from ..hardware import camera_binning

    try:
        return max(1, camera_binning(rc.core, rc.camera))
    except ValueError:
        return 1


def acquire_series(
    rig: Rig,
    roles: Sequence[str],
    exposures_ms: Sequence[float],
    frames: int = 2,
    *,
    confirm: Callable[[str], None] | None = None,
    show_progress: bool = True,
) -> list[CameraSeries]:
    """Each camera's dark and flat series (module doc); the rig is left as found.

    ``confirm(message)`` is called where the user must act (put the specimen in
    place, or turn the light off where there is no shutter); it may wait.
    """
    from .._progress import progress
    from ..acquire import camera_model

    levels = check_exposures(exposures_ms, frames)
    cams = _cameras(rig, roles)
    hooks = rig.spec.camera_calibration if rig.spec is not None else None
    dark = _resolve(rig, hooks.dark, "dark") if hooks else []
    flat = _resolve(rig, hooks.flat, "flat") if hooks else []
    for rc in cams:
        _check_camera_exposures(rc, levels)
    shutter = rig.primary.core.getShutterDevice()
    ask = confirm or (lambda message: None)
    specimen = (
        "Put a uniform specimen under the objective (a fluorescent slide or an even "
        "transmitted field) and set the light so the longest exposure "
        f"({levels[-1]:g} ms) is bright but not saturated."
    )
    if shutter or dark:
        closed = (
            f"shutter {shutter!r} closed" if shutter else "the rig file's dark settings"
        )
        ask(f"{specimen} The dark frames are taken with {closed}.")
    else:
        ask(
            "This rig has no shutter: turn the light off for the dark frames (you "
            "are asked again before the flat frames)."
        )
    series = [
        CameraSeries(
            rc.role, rc.camera, camera_model(rc.core, rc.camera), _binning(rc), levels
        )
        for rc in cams
    ]
    state = _capture(rig, [*dark, *flat])
    for rc, s in zip(cams, series, strict=True):
        s.saturation_adu = _top(rc)
    bar = progress(
        total=len(cams) * frames * (1 + len(levels)),
        desc="calibrate-camera",
        unit="frame",
        disable=not show_progress,
    )
    try:
        _light(rig, on=False)
        for rc in cams:
            _set_exposure(rc, levels[0])
        _apply(dark)
        for rc, s in zip(cams, series, strict=True):
            for _ in range(frames):
                s.dark.append(_snap(rc))
                bar.update(1)
        _put_back(state, dark)
        if not (shutter or dark):
            ask(f"Turn the light on. {specimen}")
        _light(rig, on=True)
        for ms in levels:
            for rc in cams:
                _set_exposure(rc, ms)
            _apply(flat)
            for rc, s in zip(cams, series, strict=True):
                s.flats.append([_snap(rc) for _ in range(frames)])
                bar.update(frames)
    finally:
        bar.close()
        state.restore()
    return series


def fit_series(series: CameraSeries) -> Photometry:
    """The camera's photometry from its series; a saturated or dark-only flat
    series raises :class:`PhotometryError` naming the camera."""
    from ..rig import PhotometryError, photometry_from_series

    camera = f"the {series.role} camera {series.label!r}"
    top = series.saturation_adu
    for ms, frames in zip(series.exposures_ms, series.flats, strict=True):
        if top is not None and max(int(f.max()) for f in frames) >= top:
            raise PhotometryError(
                f"{camera}: its flats at {ms:g} ms are saturated ({top} ADU, the top "
                "of its bit depth): lower the light or the exposure"
            )
    try:
        return photometry_from_series(series.dark, series.flats)
    except PhotometryError as exc:
        exps = ", ".join(f"{e:g}" for e in series.exposures_ms)
        raise PhotometryError(f"{camera} (flats at {exps} ms): {exc}") from None


# -- the result -----------------------------------------------------------------


def store(
    path: Path, rig_file: Path, results: Sequence[tuple[CameraSeries, Photometry]]
) -> None:
    """Write the measurements to ``path``, keeping a stored camera not measured now."""
    from ..rig import (
        StoredCamera,
        StoredPhotometry,
        read_stored_photometry,
        write_stored_photometry,
    )

    now = datetime.now().astimezone().replace(microsecond=0)
    old = read_stored_photometry(path)
    cameras: dict[Any, StoredCamera] = dict(old.cameras) if old is not None else {}
    for s, photometry in results:
        cameras[s.role] = StoredCamera(
            label=s.label,
            camera_model=s.camera_model,
            binning=s.binning,
            photometry=photometry,
            measured=now,
        )
    write_stored_photometry(path, StoredPhotometry(rig=rig_file.name, cameras=cameras))


def _ptc_points(s: CameraSeries) -> tuple[list[float], list[float], float]:
    """Per exposure: mean above dark and temporal variance (ADU²); dark variance."""
    import numpy as np

    d = np.stack([np.asarray(f, np.float64) for f in s.dark])
    dark_var = float(np.diff(d[:2], axis=0).var() / 2)
    means, variances = [], []
    for frames in s.flats:
        a, b = (np.asarray(f, np.float64) for f in frames[:2])
        means.append(float((a.mean() + b.mean()) / 2 - d.mean()))
        variances.append(float((a - b).var() / 2))
    return means, variances, dark_var


def plot_photon_transfer(
    results: Sequence[tuple[CameraSeries, Photometry]], path: Path
) -> Path:
    """The photon-transfer curve of each camera (variance against mean, with the
    fit) as a PNG (Agg canvas: no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0 * len(results), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (s, p) in zip(axes, results, strict=True):
        means, variances, dark_var = _ptc_points(s)
        ax.plot([0.0, *means], [dark_var, *variances], "o", label="dark, flats")
        if p.e_per_adu is not None:
            x = np.linspace(0.0, max(means) * 1.05, 50)
            ax.plot(x, dark_var + x / p.e_per_adu, "-", label="fit")
        ax.set_xlabel("mean above dark (ADU)")
        ax.set_ylabel("temporal variance (ADU²)")
        ax.set_title(f"{s.role} {s.label}: {p.e_per_adu:.4g} e-/ADU", fontsize="medium")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


# -- the command ------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"pairscope: {message}", file=sys.stderr)


def _wait_for_enter(message: str) -> None:
    _say(message)
    print("Press Enter to start (Ctrl-C to stop) ", end="", file=sys.stderr, flush=True)
    try:
        input()  # the prompt on stderr: stdout is the result file's path
    except EOFError:
        print(file=sys.stderr)
        raise ValueError(
            "no one to press Enter (the input is not a terminal): put the specimen "
            "in place and pass --yes"
        ) from None


def _declared_note(
    declared: DeclaredPhotometry | None, measured: Photometry, role: str
) -> str | None:
    """What a run will use where the rig file also declares this camera."""
    if declared is None:
        return None
    from ..rig import photometry_disagreement

    line = photometry_disagreement(role, declared.photometry("the rig file"), measured)
    return line or (
        f"the rig file declares the {role} camera's photometry "
        f"({declared.e_per_adu:.4g} e-/ADU): runs keep the declaration"
    )


def _cmd_calibrate_camera(args: argparse.Namespace) -> int:
    from .._files import check_writable
    from ..errors import ConfigError
    from ..hardware import is_rig_file, open_rig
    from ..rig import stored_photometry_path

    rig_file: Path = args.rig.expanduser()
    if not is_rig_file(rig_file):
        raise ConfigError(
            f"{rig_file.name} is not a rig file (.yaml): calibrate-camera stores its "
            "result beside the rig file, where the runs on that rig read it"
        )
    levels = check_exposures(args.exposures, args.frames)
    default = stored_photometry_path(rig_file)
    out: Path = args.out.expanduser() if args.out is not None else default
    if not out.parent.is_dir():
        raise ValueError(
            f"{out.parent} does not exist: create it or choose another --out"
        )
    check_writable(  # before minutes at the microscope, not after them
        out.parent,
        what="the measured photometry",
        fix="store it elsewhere with --out FILE"
        if args.out is None
        else "choose a writable --out FILE",
    )
    roles = ROLES if args.role == "both" else (args.role,)
    confirm = _say if args.yes else _wait_for_enter
    with open_rig(rig_file, announce=_say) as rig:
        series = acquire_series(rig, roles, levels, args.frames, confirm=confirm)
        spec = rig.spec
    declared: dict[str, DeclaredPhotometry | None] = (
        {c.role: c.photometry for c in spec.cores} if spec is not None else {}
    )
    results = [(s, fit_series(s)) for s in series]
    store(out, rig_file, results)
    png = plot_photon_transfer(results, out.with_suffix(".png"))
    for s, p in results:
        print(
            f"{s.role} camera {s.label} ({s.camera_model or 'unknown model'}, "
            f"binning {s.binning}): {p.describe()}",
            file=sys.stderr,
        )
        if (line := _declared_note(declared.get(s.role), p, s.role)) is not None:
            _say(line)
    _say(f"photon-transfer plot: {png}")
    if out.resolve() != default.resolve():
        _say(
            f"runs on this rig read {default.name} beside the rig file; copy {out.name} "
            "there to use it"
        )
    print(out)
    return 0
