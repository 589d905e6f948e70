"""Paired acquisition: the engine, the run facade, the pair and its signals."""

from ._acquisition import AcquisitionSummary, PairedAcquisition
from ._audit import PairingAudit, audit_pairing
from ._engine import PairedEngine
from ._pair import CameraFrameInfo, Pair, PairMetadata
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
    "audit_pairing",
]
