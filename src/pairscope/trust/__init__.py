"""Live trust: every restored frame checked against its reference and its input.

See :mod:`pairscope.trust._checks` for the metrics and how the thresholds follow
from the fitted noise model, :mod:`pairscope.trust._monitor` for the live monitor.
Nothing here imports Qt or torch.
"""

from ._calibrate import calibration_for_run, calibration_from_info
from ._checks import (
    DATA_RANGE,
    SSIM_SIGMA_PX,
    CameraNoise,
    CheckResult,
    Thresholds,
    TrustCalibration,
    check_pair,
    registered_crop,
    registration_margin,
)
from ._monitor import (
    QUALITY_FILE,
    TrustMonitor,
    TrustSignals,
    TrustSummary,
    attach_trust_monitor,
)

__all__ = [
    "DATA_RANGE",
    "QUALITY_FILE",
    "SSIM_SIGMA_PX",
    "CameraNoise",
    "CheckResult",
    "Thresholds",
    "TrustCalibration",
    "TrustMonitor",
    "TrustSignals",
    "TrustSummary",
    "attach_trust_monitor",
    "calibration_for_run",
    "calibration_from_info",
    "check_pair",
    "registered_crop",
    "registration_margin",
]
