"""Paired acquisition: the engine, the run facade, the pair and its signals."""

from ._acquisition import AcquisitionSummary, PairedAcquisition
from ._audit import PairingAudit, audit_pairing
from ._engine import PairedEngine
from ._pair import CameraFrameInfo, Pair, PairMetadata
from ._rig_model import camera_model, rig_model_at_start
from ._rig_state import RigState
from ._signals import PairedSignals

__all__ = [
    "AcquisitionSummary",
    "CameraFrameInfo",
    "Pair",
    "PairMetadata",
    "PairedAcquisition",
    "PairedEngine",
    "PairedSignals",
    "PairingAudit",
    "RigState",
    "audit_pairing",
    "camera_model",
    "rig_model_at_start",
]
