"""``pairscope evaluate MODEL RUN...``: an evaluation that cannot flatter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from .._targets import TARGETS_HELP  # not ..evaluate: that loads torch

    if "evaluate" in sub.choices:  # an older cli.py still defines it
        return

    p = sub.add_parser(
        "evaluate",
        help="score a model against bicubic & co., the ceiling and the ideal",
        description="Score MODEL, nearest/bilinear/bicubic, the ceiling and the ideal "
        "against one target per pair (the registered reference), with PSNR/SSIM on a "
        "fixed data range, FRC agreement beside the low-dose Nyquist, a two-point "
        "table per separation with regressions, and the trust monitor's verdicts "
        "(quality.jsonl). Refuses a model trained for another binning, pixel size "
        "or camera; says so when a run was part of the model's training data.",
        epilog="--targets FILE format:\n" + TARGETS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="model file (.safetensors or .zip)")
    p.add_argument("runs", type=Path, nargs="+", help="run folders to score on")
    p.add_argument(
        "--out", type=Path, required=True, help="folder for the report (required)"
    )
    p.add_argument(
        "--max-pairs", type=int, default=None, help="pairs per run (default: all)"
    )
    p.add_argument(
        "--targets",
        type=Path,
        default=None,
        metavar="FILE",
        help="point-pair targets (JSON, reference pixels; format below)",
    )
    p.add_argument(
        "--rayleigh-um",
        type=float,
        default=None,
        help="Rayleigh distance 0.61 λ/NA for the table's Rayleigh units "
        "(default: from the run's rig model, where its optics are known)",
    )
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="score the model as `pairscope restore --self-ensemble` restores "
        "(mean of the eight flips and quarter turns; off unless given)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, load_targets

    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError(f"--max-pairs must be at least 1, got {args.max_pairs}")
    targets = load_targets(args.targets) if args.targets is not None else None
    evaluate(
        args.model,
        args.runs,
        args.out,
        max_pairs=args.max_pairs,
        targets=targets,
        rayleigh_um=args.rayleigh_um,
        self_ensemble=args.self_ensemble,
        progress=not args.no_progress,
    )
    summary = args.out / "summary.md"
    print(summary.read_text(), file=sys.stderr)
    print(summary)
    return 0
