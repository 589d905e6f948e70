"""``pairscope import-model PACKAGE.zip --out MODEL``: a bioimage.io package back."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pairscope import-model``."""
    p = sub.add_parser(
        "import-model",
        help="check a bioimage.io package from 'pairscope export' and extract its model",
        description="Check a bioimage.io package written by 'pairscope export' "
        "(the same refusals as a model file, and weights that must match) and "
        "write its pairscope model file.",
    )
    p.add_argument("package", type=Path, help="bioimage.io package (.zip)")
    p.add_argument(
        "--out", type=Path, required=True, help="model file to write (.safetensors)"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from pairscope.bioimageio import import_bioimageio
    from pairscope.restore import describe_model_file

    model = import_bioimageio(args.package, args.out, force=args.force)
    print(describe_model_file(model.path or args.out), file=sys.stderr)
    print(model.path)
    return 0
