"""Validation metrics: intensity metrics, FRC, two-point resolution, baselines.

Pure numpy/scipy; plotting (matplotlib, Agg) is imported lazily.
"""

from ._baselines import UpsampleMethod, upsample
from ._consistency import (
    ConsistencyResult,
    bin_image,
    consistency_residual,
    reblur_and_bin,
)
from ._frc import FRCCurve, frc_curve, frc_resolution
from ._ideal_observer import (
    IdealObserver,
    d_prime,
    ideal_observer_for_rig,
    ideal_resolvable,
)
from ._intensity import TargetScores, affine_fit, percentile_normalize, psnr, ssim
from ._plots import (
    new_figure,
    plot_frc_curves,
    plot_metrics_over_time,
    plot_side_by_side,
    plot_two_point,
    save_figure,
)
from ._two_point import (
    RAYLEIGH_DIP_RATIO,
    ROD_SPLIT_LIMIT,
    TABLE_METHODS,
    TwoPointResult,
    TwoPointTally,
    TwoPointTarget,
    rod_split,
    smallest_resolved_separation,
    two_point_report,
    two_point_resolved,
    wilson_interval,
)

__all__ = [
    "RAYLEIGH_DIP_RATIO",
    "ROD_SPLIT_LIMIT",
    "TABLE_METHODS",
    "ConsistencyResult",
    "FRCCurve",
    "IdealObserver",
    "TargetScores",
    "TwoPointResult",
    "TwoPointTally",
    "TwoPointTarget",
    "UpsampleMethod",
    "affine_fit",
    "bin_image",
    "consistency_residual",
    "d_prime",
    "frc_curve",
    "frc_resolution",
    "ideal_observer_for_rig",
    "ideal_resolvable",
    "new_figure",
    "percentile_normalize",
    "plot_frc_curves",
    "plot_metrics_over_time",
    "plot_side_by_side",
    "plot_two_point",
    "psnr",
    "reblur_and_bin",
    "rod_split",
    "save_figure",
    "smallest_resolved_separation",
    "ssim",
    "two_point_report",
    "two_point_resolved",
    "upsample",
    "wilson_interval",
]
