"""Training: camera noise fit, crappifier, training loop (single process or torchrun).

torch is imported here (as in ``pairscope.restore``); nothing here imports Qt.
"""

from ._config import TRAIN_CONFIG_VERSION, TrainConfig, TrainingError
from ._crappify import CrappifiedDataset, crappify
from ._noise_fit import NoiseModel, fit_noise_model
from ._trainer import TrainResult, checkpoint_path, train

__all__ = [
    "TRAIN_CONFIG_VERSION",
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
