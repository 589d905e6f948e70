"""Find and check the two detectors of a pair, and the factor between their grids.

The factor comes from physics, not array shapes: each camera's pixel size in the
sample plane (its core's pixel-size configuration, times its binning).  Cameras of
different sensor sizes or ROIs pair over their common field of view (a centred
crop of the larger one, recorded with the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pymmcore_plus import CMMCorePlus, DeviceType

from ..config import AcquisitionSettings, PairingMode
from ..errors import PairingError
from ._pixels import camera_binning, unbinned_pixel_size_um
from ._rig import Rig

Crop = tuple[int, int, int, int]  # (y0, x0, height, width)


@dataclass(frozen=True, slots=True)
class CameraInfo:
    label: str
    binning: int
    shape: tuple[int, int]  # (height, width) of the image at that binning
    pixel_size_um: float | None = None  # at that binning
    core: str = "primary"


@dataclass(frozen=True, slots=True)
class DetectorPair:
    """The low-dose and reference detectors, the grid factor and why."""

    mode: PairingMode  # resolved: never AUTO
    lowdose: str
    reference: str  # same label as lowdose in alternating mode
    factor: int
    reasons: tuple[str, ...]
    lowdose_core: str = "primary"
    reference_core: str = "primary"
    lowdose_pixel_um: float | None = None
    reference_pixel_um: float | None = None
    lowdose_crop: Crop | None = None  # common field of view, low-dose pixels
    reference_crop: Crop | None = None
    multi_camera: str | None = None  # the Multi Camera device label, if used
    extra: dict[str, object] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "lowdose": self.lowdose,
            "reference": self.reference,
            "lowdose_core": self.lowdose_core,
            "reference_core": self.reference_core,
            "factor": self.factor,
            "lowdose_pixel_size_um": self.lowdose_pixel_um,
            "reference_pixel_size_um": self.reference_pixel_um,
            "lowdose_crop": self.lowdose_crop,
            "reference_crop": self.reference_crop,
            "multi_camera": self.multi_camera,
            "reasons": list(self.reasons),
        }


def camera_info(
    core: CMMCorePlus, label: str, binning: int | None = None, core_name: str = ""
) -> CameraInfo:
    """Binning, image shape and pixel size of a camera (current or at ``binning``)."""
    b = camera_binning(core, label)
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
    unbinned, _ = unbinned_pixel_size_um(core, label)
    px = None if unbinned is None else unbinned * b
    return CameraInfo(label, b, shape, px, core_name or "primary")


def list_cameras(core: CMMCorePlus) -> list[str]:
    """Physical cameras (Micro-Manager's 'Multi Camera' utility excluded)."""
    return [
        lbl
        for lbl in core.getLoadedDevicesOfType(DeviceType.Camera)
        if core.getDeviceName(lbl) != "Multi Camera"
    ]


def multi_camera_devices(core: CMMCorePlus) -> list[str]:
    return [
        lbl
        for lbl in core.getLoadedDevicesOfType(DeviceType.Camera)
        if core.getDeviceName(lbl) == "Multi Camera"
    ]


def resolve_mode(rig: Rig, settings: AcquisitionSettings) -> PairingMode:
    """The pairing mode actually run (``auto`` resolved), or a PairingError."""
    mode = settings.mode
    if mode is PairingMode.AUTO:
        if rig.multi_core:
            return PairingMode.SIMULTANEOUS
        return PairingMode.SEQUENTIAL
    if rig.multi_core and mode in (
        PairingMode.SEQUENTIAL,
        PairingMode.MULTI_CAMERA,
        PairingMode.ALTERNATING,
    ):
        raise PairingError(
            f"Mode {mode.value!r} runs on one core; this is a rig of "
            f"{len(rig.cores)} cores. Use 'triggered' or 'simultaneous' with the rig, "
            "or pass the single config for that mode."
        )
    if not rig.multi_core and mode in (PairingMode.TRIGGERED, PairingMode.SIMULTANEOUS):
        raise PairingError(
            f"Mode {mode.value!r} needs one core per camera (one Micro-Manager core "
            "cannot expose a binned and an unbinned camera at once). Pass a rig file "
            "(see hardware_configs/demo_rig.yaml), or use mode 'sequential' (pairs "
            "one after the other, labelled so) or 'multi-camera' (equal-size "
            "detectors) with this config."
        )
    return mode


def find_detector_pair(
    rig_or_core: Rig | CMMCorePlus, settings: AcquisitionSettings | None = None
) -> DetectorPair:
    """Choose the low-dose and reference cameras and the grid factor between them."""
    settings = settings or AcquisitionSettings()
    rig = rig_or_core if isinstance(rig_or_core, Rig) else Rig.from_core(rig_or_core)
    mode = resolve_mode(rig, settings)
    if mode is PairingMode.ALTERNATING:
        return _alternating_pair(rig.primary.core, settings)
    if rig.multi_core:
        low_rc = rig.primary
        ref_rc = next(c for c in rig.cores if c.role == "reference")
        low = camera_info(low_rc.core, low_rc.camera, settings.binning, low_rc.name)
        ref = camera_info(ref_rc.core, ref_rc.camera, None, ref_rc.name)
        reasons = [
            f"rig: {low.label!r} in core {low_rc.name!r} is the low-dose camera, "
            f"{ref.label!r} in core {ref_rc.name!r} the reference"
        ]
        if sum(c.role == "reference" for c in rig.cores) > 1:
            reasons.append("further reference cores are ignored by this pairing")
        return _pair(mode, low, ref, reasons)
    return _single_core_pair(rig.primary.core, settings, mode)


def _single_core_pair(
    core: CMMCorePlus, settings: AcquisitionSettings, mode: PairingMode
) -> DetectorPair:
    cameras = list_cameras(core)
    for label in (settings.lowdose_camera, settings.reference_camera):
        if label is not None and label not in cameras:
            raise PairingError(
                f"Camera {label!r} is not a loaded camera; loaded cameras: "
                f"{cameras or 'none'}. Fix the label or the config."
            )
    multi = None
    if mode is PairingMode.MULTI_CAMERA:
        devices = multi_camera_devices(core)
        if not devices:
            raise PairingError(
                "Mode 'multi-camera' needs Micro-Manager's Multi Camera device "
                "(Utilities) in the config, with its physical cameras set."
            )
        multi = devices[0]
        cameras = [
            core.getProperty(multi, f"Physical Camera {i}")
            for i in (1, 2, 3, 4)
            if core.hasProperty(multi, f"Physical Camera {i}")
        ]
        cameras = [c for c in cameras if c and c != "Undefined"]
    if len(cameras) < 2:
        raise PairingError(
            f"Mode {mode.value!r} needs two cameras (a binned low-dose and an "
            f"unbinned reference behind a beam splitter); the config has "
            f"{len(cameras)}: {cameras or 'none'}. Add the second camera to the "
            "config, or use mode 'alternating' to switch one camera's binning."
        )
    infos = {lbl: camera_info(core, lbl) for lbl in cameras}
    reasons: list[str] = []
    if settings.lowdose_camera and settings.reference_camera:
        low, ref = settings.lowdose_camera, settings.reference_camera
        reasons.append("both cameras named in the settings")
        if len(cameras) > 2:
            reasons.append(
                f"other cameras ignored: {sorted(set(cameras) - {low, ref})}"
            )
    else:  # the low-dose camera is the one with the coarser pixels
        ranked = sorted(
            infos.values(), key=lambda c: (-(c.pixel_size_um or 0), -c.binning)
        )
        low = settings.lowdose_camera or next(
            c.label for c in ranked if c.label != settings.reference_camera
        )
        ref = settings.reference_camera or next(
            c.label for c in reversed(ranked) if c.label != low
        )
        if len(cameras) > 2:  # which two is the microscopist's call, not a guess
            finest = sorted(infos.values(), key=lambda c: c.pixel_size_um or 0)
            example = ref if settings.reference_camera else next(
                c.label for c in finest if c.label != low
            )  # fmt: skip
            raise PairingError(
                f"The config has {len(cameras)} cameras ({', '.join(cameras)}) and "
                "pairscope pairs two: name them in the pairing settings, e.g. "
                f"'lowdose_camera: {low}' and 'reference_camera: {example}' (a "
                "--settings file, or the 'pairing:' section of a rig file)."
            )
        reasons.append(f"{low!r} has the coarser pixels: the low-dose camera")
    if settings.binning is not None:
        infos[low] = camera_info(core, low, settings.binning)
    if mode is PairingMode.MULTI_CAMERA and infos[low].shape != infos[ref].shape:
        raise PairingError(
            f"Multi Camera needs equal frame sizes; {low!r} gives "
            f"{infos[low].shape[1]}x{infos[low].shape[0]} and {ref!r} "
            f"{infos[ref].shape[1]}x{infos[ref].shape[0]}. Use a rig of one core "
            "per camera for cameras of different sizes."
        )
    pair = _pair(mode, infos[low], infos[ref], reasons, allow_equal=multi is not None)
    return replace(pair, multi_camera=multi) if multi is not None else pair


def _pair(
    mode: PairingMode,
    low: CameraInfo,
    ref: CameraInfo,
    reasons: list[str],
    *,
    allow_equal: bool = False,
) -> DetectorPair:
    factor = grid_factor(low, ref, allow_equal=allow_equal)
    low_crop, ref_crop = common_field_of_view(low, ref, factor)
    reasons.append(
        f"pixel sizes {low.pixel_size_um:g} µm (low-dose, binning {low.binning}) and "
        f"{ref.pixel_size_um:g} µm (reference): factor {factor}"
    )
    if low_crop or ref_crop:
        reasons.append(
            f"fields of view differ: pairs use the common field (low-dose crop "
            f"{low_crop}, reference crop {ref_crop}; y0, x0, height, width)"
        )
    return DetectorPair(
        mode,
        low.label,
        ref.label,
        factor,
        tuple(reasons),
        lowdose_core=low.core,
        reference_core=ref.core,
        lowdose_pixel_um=low.pixel_size_um,
        reference_pixel_um=ref.pixel_size_um,
        lowdose_crop=low_crop,
        reference_crop=ref_crop,
    )


def grid_factor(low: CameraInfo, ref: CameraInfo, *, allow_equal: bool = False) -> int:
    """Integer ratio of the low-dose to the reference pixel size, or PairingError."""
    for cam in (low, ref):
        if cam.pixel_size_um is None:
            raise PairingError(
                f"Camera {cam.label!r} has no known pixel size. Define a pixel-size "
                "configuration in its config (e.g. '#py ConfigPixelSize,Res,Core,"
                f"Camera,{cam.label}' and '#py PixelSize_um,Res,0.1', without '#py ' "
                "for C++ devices) so pairscope can compute the binning factor."
            )
    assert low.pixel_size_um is not None and ref.pixel_size_um is not None
    ratio = low.pixel_size_um / ref.pixel_size_um
    factor = round(ratio)
    lowest = 1 if allow_equal else 2
    if factor < lowest or abs(ratio - factor) > 0.01 * ratio:
        raise PairingError(
            f"Low-dose {low.label!r} pixels are {low.pixel_size_um:g} µm (binning "
            f"{low.binning}) and reference {ref.label!r} pixels {ref.pixel_size_um:g} "
            f"µm: the ratio {ratio:.3f} is not an integer factor >= {lowest}. Bin the "
            "low-dose camera (e.g. 2x2) or fix the pixel-size configurations."
        )
    return factor


def common_field_of_view(
    low: CameraInfo, ref: CameraInfo, factor: int
) -> tuple[Crop | None, Crop | None]:
    """Centred crops so both frames cover the same field, ref = factor x low."""
    (lh, lw), (rh, rw) = low.shape, ref.shape
    h = min(lh, rh // factor)
    w = min(lw, rw // factor)
    if h < 8 or w < 8:
        raise PairingError(
            f"The cameras share almost no field of view ({w}x{h} low-dose pixels). "
            "Check the ROIs and binning of both cameras."
        )
    low_crop = None if (h, w) == (lh, lw) else ((lh - h) // 2, (lw - w) // 2, h, w)
    H, W = h * factor, w * factor
    ref_crop = None if (rh, rw) == (H, W) else ((rh - H) // 2, (rw - W) // 2, H, W)
    return low_crop, ref_crop


def _alternating_pair(core: CMMCorePlus, settings: AcquisitionSettings) -> DetectorPair:
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
    unbinned, _ = unbinned_pixel_size_um(core, label)
    reasons = (
        f"one camera {label!r} alternates binning {settings.binning} (low-dose) and 1 "
        "(reference); frames of a pair are consecutive, not simultaneous",
    )
    return DetectorPair(
        PairingMode.ALTERNATING,
        label,
        label,
        settings.binning,
        reasons,
        lowdose_pixel_um=None if unbinned is None else unbinned * settings.binning,
        reference_pixel_um=unbinned,
    )
