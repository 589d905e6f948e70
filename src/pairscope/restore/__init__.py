"""Restoration: networks, the model file format and the streaming restorer.

torch is imported only here (and in ``pairscope.train``); nothing here imports Qt.
"""

from ._model_file import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    MAX_PARAMETERS,
    CameraModel,
    LoadedModel,
    ModelFileError,
    ModelInfo,
    NoiseFit,
    Normalization,
    PsfFit,
    TrainedRun,
    ValidationScores,
    check_compatible,
    describe_model_file,
    load_model,
    loaded_from_network,
    model_sha256,
    save_model,
)
from ._networks import (
    ARCHITECTURES,
    NetworkParams,
    RestorationNet,
    ResUNet,
    UNet,
    build_network,
    check_params,
    default_preview_network,
    expected_shapes,
)
from ._rig_check import (
    RigMismatchError,
    check_model_for_rig,
    log_rig_check,
)
from ._streaming import (
    RestoredFrame,
    RestorerSignals,
    RestorerStats,
    StreamingRestorer,
    pick_device,
)
from ._tiling import restore_tiled

__all__ = [
    "ARCHITECTURES",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_PARAMETERS",
    "CameraModel",
    "LoadedModel",
    "ModelFileError",
    "ModelInfo",
    "NetworkParams",
    "NoiseFit",
    "Normalization",
    "PsfFit",
    "ResUNet",
    "RestorationNet",
    "RestoredFrame",
    "RestorerSignals",
    "RestorerStats",
    "RigMismatchError",
    "StreamingRestorer",
    "TrainedRun",
    "UNet",
    "ValidationScores",
    "build_network",
    "check_compatible",
    "check_model_for_rig",
    "check_params",
    "default_preview_network",
    "describe_model_file",
    "expected_shapes",
    "load_model",
    "loaded_from_network",
    "log_rig_check",
    "model_sha256",
    "pick_device",
    "restore_tiled",
    "save_model",
]
