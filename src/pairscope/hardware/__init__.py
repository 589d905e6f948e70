"""Create the core, load configs, and find and check the detector pair."""

from ._core import create_core, demo_config_path, load_config, open_core, release_core
from ._detectors import (
    CameraInfo,
    DetectorPair,
    camera_info,
    check_size_ratio,
    find_detector_pair,
    list_cameras,
)

__all__ = [
    "CameraInfo",
    "DetectorPair",
    "camera_info",
    "check_size_ratio",
    "create_core",
    "demo_config_path",
    "find_detector_pair",
    "list_cameras",
    "load_config",
    "open_core",
    "release_core",
]
