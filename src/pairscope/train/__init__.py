"""Training: camera noise fit, crappifier, training loop (single process or torchrun).

torch is imported here (as in ``pairscope.restore``); nothing here imports Qt.
"""

from ._crappify import CrappifiedDataset, crappify
from ._noise_fit import NoiseModel, fit_noise_model
from ._trainer import TrainConfig, TrainResult, checkpoint_path, train

__all__ = [
    "CrappifiedDataset",
    "NoiseModel",
    "TrainConfig",
    "TrainResult",
    "checkpoint_path",
    "crappify",
    "fit_noise_model",
    "train",
]
