"""``pairscope export MODEL --bioimageio OUT.zip``: share a model as the field does."""

from __future__ import annotations

import argparse
import sys
import time
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


class _Steps:
    """Names each step of the export on stderr as it starts, with the time so far."""

    def __init__(self, steps: dict[str, str]) -> None:
        self.steps = steps
        self.t0 = time.monotonic()

    def __call__(self, name: str) -> None:
        k = list(self.steps).index(name) + 1
        print(
            f"export {k}/{len(self.steps)} {name}: {self.steps[name]} "
            f"(at {time.monotonic() - self.t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def _cmd_export(args: argparse.Namespace) -> int:
    from pairscope.bioimageio import (
        EXPORT_STEPS,
        INSTALL_EXTRA,
        ExportExtraMissing,
        export_bioimageio,
        require_export_extra,
    )

    require_export_extra()  # one line naming the extra, before any work
    steps = dict(EXPORT_STEPS)
    if args.test:
        steps["test"] = "bioimage.io's own test of every weight format"
    say = _Steps(steps)
    try:
        out = export_bioimageio(
            args.model,
            args.bioimageio,
            sample_run=args.sample_run,
            authors=args.author,
            force=args.force,
            on_step=say,
        )
        if args.test:
            from pairscope.bioimageio import test_package

            say("test")
            status = test_package(out)
            print(f"bioimageio test: {status}", file=sys.stderr)
            if status != "passed":
                return 1
    except ModuleNotFoundError as e:  # a part of the extra that fails to import
        raise ExportExtraMissing(
            f"export needs the 'export' extra ({e.name} cannot be imported): "
            f"{INSTALL_EXTRA}"
        ) from None
    print(f"export: done in {time.monotonic() - say.t0:.0f} s", file=sys.stderr)
    print(out)
    return 0
