"""``pairscope restore MODEL RUN --out DIR``: restore every low-dose frame of a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .acquire import alpha_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="restore every low-dose frame of a finished run (predictions OME-TIFF)",
        description="Restore every low-dose frame of RUN with MODEL into "
        "DIR/restored.prediction.ome.tif (marked as predictions with the model's "
        "SHA-256, reference pixel size, one plane per pair).",
    )
    p.add_argument("model", type=Path, help="model file (.safetensors)")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (required)")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda:0")
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile size for big frames (default: whole frames)",
    )
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the restorations of each frame's eight flips and quarter "
        "turns: 8x the time, a little less noise (off unless given)",
    )
    p.add_argument(
        "--alpha",
        type=alpha_argument,
        default=None,
        help="also write each frame's trust interval at this risk level, in (0, 0.5], "
        "into DIR/restored.uncertainty.ome.tif, calibrated on the run's own "
        "same-instant reference pairs (coverage of the held-out ones in restore.json)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_restore)


def _cmd_restore(args: argparse.Namespace) -> int:
    from ..offline import restore_run

    result = restore_run(
        args.model,
        args.run,
        args.out,
        device=args.device,
        tile=args.tile,
        self_ensemble=args.self_ensemble,
        progress=not args.no_progress,
        alpha=args.alpha,
    )
    print(
        f"restored {result.frames} frames with {result.model_name!r} "
        f"(sha256 {result.model_sha256[:12]}…"
        f"{', self-ensemble of 8' if result.self_ensemble else ''}) on "
        f"{result.device} in "
        f"{result.seconds:.1f} s",
        file=sys.stderr,
    )
    print(result.out)
    return 0
