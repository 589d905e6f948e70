"""``pairscope repair RUN``: finalise a run interrupted by kill -9, a crash or power loss."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "repair",
        help="finalise an interrupted run (keeps the pairs its manifest lists)",
        description="Finalise a run folder left by kill -9, a crash or power loss: "
        "keep exactly the pairs pairs.jsonl lists, write the OME metadata, set the "
        "status to 'recovered'. Safe to repeat; refuses a run still being written.",
    )
    p.add_argument(
        "runs", type=Path, nargs="+", metavar="RUN", help="interrupted run folders"
    )
    p.set_defaults(func=_cmd_repair)


def _cmd_repair(args: argparse.Namespace) -> int:
    from ..io import repair_run

    for run in args.runs:
        report = repair_run(run)
        for line in report.lines():
            print(line, file=sys.stderr)
        print(report.run_dir)
    return 0
