"""Find and check the two detectors of a pair through the core's API only."""

from __future__ import annotations

from dataclasses import dataclass

from pymmcore_plus import CMMCorePlus, DeviceType

from ..config import AcquisitionSettings, PairingMode
from ..errors import PairingError


@dataclass(frozen=True, slots=True)
class CameraInfo:
    label: str
    binning: int
    shape: tuple[int, int]  # (height, width) of the current image


@dataclass(frozen=True, slots=True)
class DetectorPair:
    """The low-dose and reference detectors, the binning factor and why."""

    mode: PairingMode
    lowdose: str
    reference: str  # same label as lowdose in alternating mode
    factor: int
    reasons: tuple[str, ...]


def camera_info(
    core: CMMCorePlus, label: str, binning: int | None = None
) -> CameraInfo:
    """Binning and image shape of a camera, without making it the current camera."""
    b = (
        int(float(core.getProperty(label, "Binning")))
        if core.hasProperty(label, "Binning")
        else 1
    )
    previous = core.getCameraDevice()
    try:
        if previous != label:
            core.setCameraDevice(label)
        shape = (core.getImageHeight(), core.getImageWidth())
    finally:
        if previous and previous != label:
            core.setCameraDevice(previous)
    if binning is not None and binning != b:  # predict the binned shape
        shape = (shape[0] * b // binning, shape[1] * b // binning)
        b = binning
    return CameraInfo(label, b, shape)


def list_cameras(core: CMMCorePlus) -> list[str]:
    """Physical cameras (Micro-Manager's 'Multi Camera' utility excluded)."""
    return [
        lbl
        for lbl in core.getLoadedDevicesOfType(DeviceType.Camera)
        if core.getDeviceName(lbl) != "Multi Camera"
    ]


def find_detector_pair(
    core: CMMCorePlus, settings: AcquisitionSettings | None = None
) -> DetectorPair:
    """Choose the low-dose and reference cameras and check their sizes agree."""
    settings = settings or AcquisitionSettings()
    cameras = list_cameras(core)
    for label in (settings.lowdose_camera, settings.reference_camera):
        if label is not None and label not in cameras:
            raise PairingError(
                f"Camera {label!r} is not a loaded camera; loaded cameras: "
                f"{cameras or 'none'}. Fix the label or the config."
            )
    if settings.mode is PairingMode.ALTERNATING:
        return _alternating_pair(core, cameras, settings)
    if len(cameras) < 2:
        raise PairingError(
            f"Mode {settings.mode.value!r} needs two cameras (a binned low-dose and an "
            f"unbinned reference behind a beam splitter); the config has "
            f"{len(cameras)}: {cameras or 'none'}. Add the second camera to the "
            "config, or use mode 'alternating' to switch one camera's binning."
        )
    infos = {lbl: camera_info(core, lbl) for lbl in cameras}
    reasons: list[str] = []
    if settings.lowdose_camera and settings.reference_camera:
        low, ref = settings.lowdose_camera, settings.reference_camera
        reasons.append("both cameras named in the settings")
    else:
        # the low-dose camera is the more binned one (or has the smaller image)
        ranked = sorted(infos.values(), key=lambda c: (-c.binning, c.shape[1]))
        low = settings.lowdose_camera or next(
            c.label for c in ranked if c.label != settings.reference_camera
        )
        ref = settings.reference_camera or next(
            c.label for c in reversed(ranked) if c.label != low
        )
        reasons.append(
            f"{low!r} is the low-dose camera (binning {infos[low].binning}, image "
            f"{infos[low].shape[1]}x{infos[low].shape[0]}); {ref!r} the reference "
            f"(binning {infos[ref].binning}, image "
            f"{infos[ref].shape[1]}x{infos[ref].shape[0]})"
        )
        if len(cameras) > 2:
            reasons.append(
                f"other cameras ignored: {sorted(set(cameras) - {low, ref})}"
            )
    if settings.binning is not None:
        infos[low] = camera_info(core, low, settings.binning)
    factor = check_size_ratio(infos[low], infos[ref])
    reasons.append(f"size ratio {factor}: reference grid = {factor}x low-dose grid")
    return DetectorPair(settings.mode, low, ref, factor, tuple(reasons))


def _alternating_pair(
    core: CMMCorePlus, cameras: list[str], settings: AcquisitionSettings
) -> DetectorPair:
    label = (
        settings.lowdose_camera or settings.reference_camera or core.getCameraDevice()
    )
    if not label:
        raise PairingError(
            "Alternating mode needs a camera: the config has none selected. Set "
            "'Property,Core,Camera,<label>' in the config or pass the camera label."
        )
    assert settings.binning is not None  # validated by AcquisitionSettings
    if core.hasProperty(label, "Binning"):
        allowed = core.getAllowedPropertyValues(label, "Binning")
        if allowed and str(settings.binning) not in allowed:
            raise PairingError(
                f"Camera {label!r} cannot bin {settings.binning}x (allowed: "
                f"{list(allowed)}). Choose one of those with --binning."
            )
    reasons = (
        f"one camera {label!r} alternates binning {settings.binning} (low-dose) and 1 "
        "(reference); frames of a pair are consecutive, not simultaneous",
    )
    return DetectorPair(
        PairingMode.ALTERNATING, label, label, settings.binning, reasons
    )


def check_size_ratio(low: CameraInfo, ref: CameraInfo) -> int:
    """The integer grid ratio reference/low-dose, or a :class:`PairingError`."""
    (lh, lw), (rh, rw) = low.shape, ref.shape
    if lw == 0 or lh == 0 or rw % lw or rh % lh or rw // lw != rh // lh or rw == lw:
        raise PairingError(
            f"Reference {ref.label!r} images are {rw}x{rh} and low-dose {low.label!r} "
            f"images are {lw}x{lh}: the ratio is not an integer binning factor (>1) "
            "in both axes. Bin the low-dose camera (e.g. 2x2) and give both cameras "
            "the same field of view (sensor size / ROI)."
        )
    factor = rw // lw
    expected = low.binning // max(ref.binning, 1)
    if expected > 1 and factor != expected:
        raise PairingError(
            f"Reference {ref.label!r} ({rw}x{rh}) is {factor}x the low-dose "
            f"{low.label!r} ({lw}x{lh}), but the binning ratio is {expected}. Give "
            "both cameras the same sensor size / ROI."
        )
    return factor
