"""Create cores, load configs and rigs, and find and check the detector pair."""

from ._core import (
    create_core,
    demo_config_path,
    demo_rig_path,
    load_config,
    open_core,
    release_core,
)
from ._detectors import (
    CameraInfo,
    DetectorPair,
    camera_info,
    find_detector_pair,
    grid_factor,
    list_cameras,
    resolve_mode,
)
from ._pixels import camera_binning, unbinned_pixel_size_um
from ._rig import Rig, RigCore, RigSpec, TriggerWiring, is_rig_file, open_rig

__all__ = [
    "CameraInfo",
    "DetectorPair",
    "Rig",
    "RigCore",
    "RigSpec",
    "TriggerWiring",
    "camera_binning",
    "camera_info",
    "create_core",
    "demo_config_path",
    "demo_rig_path",
    "find_detector_pair",
    "grid_factor",
    "is_rig_file",
    "list_cameras",
    "load_config",
    "open_core",
    "open_rig",
    "release_core",
    "resolve_mode",
    "unbinned_pixel_size_um",
]
