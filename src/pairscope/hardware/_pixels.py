"""Pixel sizes in the sample plane, from the core's pixel-size configurations."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pymmcore_plus import CMMCorePlus

logger = logging.getLogger(__name__)


def camera_binning(core: CMMCorePlus, label: str) -> int:
    """The camera's current binning (1 where it has no Binning property)."""
    if not core.hasProperty(label, "Binning"):
        return 1
    try:
        return int(float(core.getProperty(label, "Binning")))
    except ValueError:  # e.g. "2x2"
        return int(str(core.getProperty(label, "Binning")).split("x")[0])


def unbinned_pixel_size_um(core: CMMCorePlus, label: str) -> tuple[float | None, str]:
    """Unbinned pixel size of camera ``label`` in µm, and where it came from.

    Sources, in order: the core's active pixel-size configuration (as
    ``getPixelSizeUm`` reports it for the current camera); a pixel-size
    configuration whose settings all match the current property values; the
    camera's own ``PixelSize_um`` property.

    Work-around (pymmcore-plus 0.18.1): ``UniMMCore`` leaves the matching of
    pixel-size configurations to the C++ core, which cannot see Python devices,
    so a config defined on them (``ConfigPixelSize,Res,Core,Camera,<py camera>``)
    never becomes current and ``getPixelSizeUm()`` is 0.  The matching is redone
    here through the core's property API, which sees both kinds of device.
    """
    current = core.getCameraDevice()
    if current == label or label in _physical_cameras(core, current):
        px = core.getPixelSizeUm()
        if px > 0:
            return px / camera_binning(core, label), "pixel-size config"
    for name in core.getAvailablePixelSizeConfigs():
        try:
            data = core.getPixelSizeConfigData(name)
            matches = all(
                str(core.getProperty(dev, prop)) == value
                for dev, prop, value in _settings(data)
                if (dev, prop) != ("Core", "Camera")  # names the camera, see below
            )
        except Exception:  # a device that cannot report does not match
            logger.debug("pixel-size config %s unreadable", name, exc_info=True)
            continue
        if matches and _names_camera(data, label, core):
            mag = core.getMagnificationFactor() or 1.0
            return core.getPixelSizeUmByID(name) / mag, f"pixel-size config {name}"
    if core.hasProperty(label, "PixelSize_um"):
        try:
            return float(core.getProperty(label, "PixelSize_um")), "camera property"
        except ValueError:
            pass
    return None, "unknown"


def _physical_cameras(core: CMMCorePlus, label: str) -> list[str]:
    """The cameras behind a Multi Camera device (empty for any other camera)."""
    if not label or core.getDeviceName(label) != "Multi Camera":
        return []
    return [
        core.getProperty(label, f"Physical Camera {i}")
        for i in range(1, 9)
        if core.hasProperty(label, f"Physical Camera {i}")
    ]


def _settings(data: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [(str(d), str(p), str(v)) for d, p, v in data]


def _names_camera(data: Any, label: str, core: CMMCorePlus) -> bool:
    """A config that sets Core-Camera applies to that camera; others to any."""
    for dev, prop, value in _settings(data):
        if dev == "Core" and prop == "Camera":
            return value == label
    return True
