"""``pairscope import``: paired stacks from another rig become a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="turn two paired stacks (TIFF / OME-TIFF) into a run folder",
        description="Frame i of --lowdose pairs with frame i of --reference. OME-TIFF "
        "metadata supplies pixel size, binning, offset and gain; options override "
        "it. A fact neither gives is an error naming the option.",
    )
    p.add_argument(
        "--lowdose", type=Path, required=True, metavar="LOW.tif",
        help="low-dose stack (TIFF, OME-TIFF or OME-Zarr; required)",
    )  # fmt: skip
    p.add_argument(
        "--reference", type=Path, required=True, metavar="REF.tif",
        help="reference stack, frame i pairs with low-dose frame i (required)",
    )  # fmt: skip
    p.add_argument(
        "--reference-pixel-um", type=float, default=None, metavar="PX",
        help="reference pixel size in µm at the specimen (default: from OME metadata)",
    )  # fmt: skip
    p.add_argument(
        "--binning", type=int, default=None, metavar="B",
        help="low-dose binning (default: the frame size ratio)",
    )  # fmt: skip
    p.add_argument(
        "--offset", type=float, default=None, metavar="ADU",
        help="low-dose camera offset (also the reference's unless --reference-offset)",
    )  # fmt: skip
    p.add_argument(
        "--gain", type=float, default=None, metavar="E_PER_ADU",
        help="low-dose camera gain, e-/ADU (also the reference's unless "
        "--reference-gain)",
    )  # fmt: skip
    p.add_argument(
        "--reference-offset", type=float, default=None, metavar="ADU",
        help="reference camera offset (default: --offset)",
    )  # fmt: skip
    p.add_argument(
        "--reference-gain", type=float, default=None, metavar="E_PER_ADU",
        help="reference camera gain, e-/ADU (default: --gain)",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR",
        help="folder for the new run folder (required)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from ..io import import_pairs

    run_dir = import_pairs(
        args.lowdose,
        args.reference,
        args.out,
        reference_pixel_um=args.reference_pixel_um,
        binning=args.binning,
        offset=args.offset,
        gain=args.gain,
        reference_offset=args.reference_offset,
        reference_gain=args.reference_gain,
        progress=not args.no_progress,
    )
    import pairscope

    with pairscope.open_run(run_dir) as run:
        print(
            f"imported {len(run)} pairs (binning {run.factor}) from {args.lowdose} "
            f"and {args.reference}",
            file=sys.stderr,
        )
    print(run_dir)
    return 0
