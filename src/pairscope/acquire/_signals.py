"""Signals of a paired acquisition (one psygnal group; Qt is only one listener)."""

from __future__ import annotations

from psygnal import Signal, SignalGroup


class PairedSignals(SignalGroup):
    """Emitted on the acquisition thread: listeners must be quick (enqueue work)."""

    started = Signal(object)  # RunInfo-like dict: detectors, sequence, settings
    pairReady = Signal(object)  # Pair
    pairIncomplete = Signal(object, str)  # Pair whose partner is missing, reason
    error = Signal(str)  # a fault that stopped the run, in words
    finished = Signal(object)  # AcquisitionSummary
