"""Training: camera noise fit, crappifier, training loop (single process or torchrun).

torch is imported on first use of what needs it (``train``, ``crappify``, ...), so
the configuration (``TrainConfig``) builds ``pairscope train --help`` without it;
nothing here imports Qt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._config import TRAIN_CONFIG_VERSION, USE_WIDTH, TrainConfig, TrainingError

if TYPE_CHECKING:
    from ._crappify import CrappifiedDataset, crappify
    from ._noise_fit import NoiseModel, fit_noise_model
    from ._trainer import TrainResult, checkpoint_path, train

__all__ = [
    "TRAIN_CONFIG_VERSION",
    "USE_WIDTH",
    "CrappifiedDataset",
    "NoiseModel",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "checkpoint_path",
    "crappify",
    "fit_noise_model",
    "train",
]

_LAZY = {
    "CrappifiedDataset": "._crappify",
    "crappify": "._crappify",
    "NoiseModel": "._noise_fit",
    "fit_noise_model": "._noise_fit",
    "TrainResult": "._trainer",
    "checkpoint_path": "._trainer",
    "train": "._trainer",
}


def __getattr__(name: str) -> Any:
    """Load torch-backed names on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
