"""``pairscope export MODEL --bioimageio OUT.zip``: share a model as the field does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pairscope export``."""
    p = sub.add_parser(
        "export",
        help="write a model as a bioimage.io package (Fiji/deepImageJ, QuPath, ilastik)",
        description="Write a pairscope model file as a bioimage.io model package "
        "(spec 0.5) with PyTorch state-dict, TorchScript and ONNX weights, the "
        "normalisation as pre/post-processing, and test tensors from a real "
        "low-dose frame. Needs the 'export' extra (pip install pairscope[export]).",
    )
    p.add_argument("model", type=Path, help="pairscope model file (.safetensors)")
    p.add_argument(
        "--bioimageio",
        type=Path,
        required=True,
        metavar="OUT.zip",
        help="package to write (required)",
    )
    p.add_argument(
        "--sample-run",
        type=Path,
        default=None,
        help="run folder whose first pair makes the test tensors (default: the "
        "first run the model was trained on)",
    )
    p.add_argument(
        "--author",
        action="append",
        default=None,
        help="author name, repeatable (default: 'pairscope user')",
    )
    p.add_argument(
        "--test",
        action="store_true",
        help="run bioimage.io's own test of the package afterwards (default: off)",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT.zip")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from pairscope.bioimageio import export_bioimageio
        from pairscope.bioimageio._test import test_package
    except ImportError as e:
        raise ValueError(
            f"export needs bioimageio.core, onnx and onnxruntime ({e.name} is "
            "missing): pip install 'pairscope[export]'"
        ) from None
    out = export_bioimageio(
        args.model,
        args.bioimageio,
        sample_run=args.sample_run,
        authors=args.author,
        force=args.force,
    )
    if args.test:
        status = test_package(out)
        print(f"bioimageio test: {status}", file=sys.stderr)
        if status != "passed":
            return 1
    print(out)
    return 0
