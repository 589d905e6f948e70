"""Restoration: networks, the model file format and the streaming restorer.

torch is imported only here (and in ``pairscope.train``); nothing here imports Qt.
"""

from ._model_file import (
    FORMAT_VERSION,
    LoadedModel,
    ModelFileError,
    ModelInfo,
    Normalization,
    TrainedRun,
    check_compatible,
    load_model,
    loaded_from_network,
    model_sha256,
    save_model,
)
from ._networks import (
    ARCHITECTURES,
    RestorationNet,
    ResUNet,
    UNet,
    build_network,
    default_preview_network,
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
    "LoadedModel",
    "ModelFileError",
    "ModelInfo",
    "Normalization",
    "ResUNet",
    "RestorationNet",
    "RestoredFrame",
    "RestorerSignals",
    "RestorerStats",
    "StreamingRestorer",
    "TrainedRun",
    "UNet",
    "build_network",
    "check_compatible",
    "default_preview_network",
    "load_model",
    "loaded_from_network",
    "model_sha256",
    "pick_device",
    "restore_tiled",
    "save_model",
]
