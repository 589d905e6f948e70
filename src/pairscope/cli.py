"""Command line: ``pairscope demo | acquire | info | calibrate | train | evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ._memory import keep_frame_memory
from .errors import PairscopeError

DEFAULT_OUT = Path("pairscope_runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_logging()
    keep_frame_memory()
    try:
        return int(args.func(args) or 0)
    except (PairscopeError, FileNotFoundError, ValueError) as exc:
        print(f"pairscope: error: {exc}", file=sys.stderr)
        return 2


def _quiet_logging() -> None:
    """Warnings and errors only: pymmcore-plus otherwise logs a line per event."""
    from pymmcore_plus import configure_logging

    configure_logging(stderr_level="WARNING")
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # also for records propagated from libraries
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pairscope", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="paired timelapse on the demo microscope")
    demo.add_argument("--frames", type=int, default=200)
    demo.add_argument("--interval-ms", type=float, default=100.0)
    demo.add_argument("--binning", type=int, choices=(2, 4), default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--sensor", type=int, default=512, help="reference pixels per side"
    )
    _live_options(demo)
    demo.set_defaults(func=_cmd_demo)

    acq = sub.add_parser("acquire", help="paired acquisition with any hardware config")
    acq.add_argument("cfg", type=Path)
    acq.add_argument(
        "--sequence", type=Path, required=True, help="useq MDASequence (.json/.yaml)"
    )
    acq.add_argument(
        "--mode",
        choices=("simultaneous", "sparse", "alternating"),
        default="simultaneous",
    )
    acq.add_argument("--binning", type=int, default=None)
    acq.add_argument("--reference-every", type=int, default=None)
    acq.add_argument(
        "--settings", type=Path, default=None, help="AcquisitionSettings (.json/.yaml)"
    )
    _live_options(acq)
    acq.set_defaults(func=_cmd_acquire)

    info = sub.add_parser(
        "info", help="list the detectors a config would pair, and why"
    )
    info.add_argument("cfg", type=Path)
    info.add_argument(
        "--mode",
        choices=("simultaneous", "sparse", "alternating"),
        default="simultaneous",
    )
    info.add_argument("--binning", type=int, default=None)
    info.set_defaults(func=_cmd_info)

    cal = sub.add_parser(
        "calibrate", help="register the low-dose camera to the reference"
    )
    cal.add_argument("run", type=Path)
    cal.add_argument("--max-pairs", type=int, default=20)
    cal.set_defaults(func=_cmd_calibrate)

    ev = sub.add_parser("evaluate", help="score a model against bicubic & co.")
    ev.add_argument("model", type=Path)
    ev.add_argument("runs", type=Path, nargs="+")
    ev.add_argument("--out", type=Path, required=True, help="folder for the report")
    ev.add_argument("--max-pairs", type=int, default=None, help="per run")
    ev.add_argument(
        "--targets",
        type=Path,
        default=None,
        help="JSON list of [[x1, y1], [x2, y2], separation_um] in reference pixels",
    )
    ev.set_defaults(func=_cmd_evaluate)
    _register_command_modules(sub)
    return p


def _register_command_modules(sub: argparse._SubParsersAction) -> None:
    """Each module of :mod:`pairscope.commands` adds its own subcommand(s).

    A module defines ``register(subparsers)``, which adds a parser and sets its
    ``func`` default (a function of the parsed arguments returning an exit code).
    """
    import importlib
    import pkgutil

    from . import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)


def _live_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for run folders"
    )
    p.add_argument("--headless", action="store_true", help="no window: PNG snapshots")
    p.add_argument("--model", type=Path, default=None, help="restoration model file")
    p.add_argument("--no-restore", action="store_true", help="no live restoration")
    p.add_argument("--save-restored", action="store_true", help="save predictions")
    p.add_argument("--no-progress", action="store_true")


def _live(args: argparse.Namespace):
    from .live import LiveOptions

    return LiveOptions(
        out=args.out,
        headless=args.headless,
        restore=not args.no_restore,
        model=args.model,
        save_restored=args.save_restored,
        progress=not args.no_progress,
    )


def _settings_from_args(args: argparse.Namespace):
    from .config import AcquisitionSettings

    data = {}
    if getattr(args, "settings", None):
        data = AcquisitionSettings.from_file(args.settings).model_dump()
    data["mode"] = args.mode
    if args.binning is not None:
        data["binning"] = args.binning
    if args.mode == "sparse":
        data["reference_every"] = getattr(args, "reference_every", None) or 5
    return AcquisitionSettings.model_validate(data)


def _cmd_demo(args: argparse.Namespace) -> int:
    import useq

    from .config import AcquisitionSettings
    from .hardware import demo_config_path, open_core
    from .live import run_live

    cfg = demo_config_path()
    with open_core(cfg) as core:
        core.setProperty("DemoHub", "Seed", args.seed)
        for cam in ("LowDoseCam", "ReferenceCam"):
            core.setProperty(cam, "SensorSize", args.sensor)
        settings = AcquisitionSettings(binning=args.binning)
        sequence = useq.MDASequence(
            time_plan={"interval": args.interval_ms / 1000.0, "loops": args.frames}
        )
        summary = run_live(
            core, settings, sequence, config_path=cfg, options=_live(args)
        )
    return _report(summary)


def _cmd_acquire(args: argparse.Namespace) -> int:
    from .hardware import open_core
    from .live import run_live

    sequence = _load_sequence(args.sequence)
    settings = _settings_from_args(args)
    with open_core(args.cfg) as core:
        summary = run_live(
            core, settings, sequence, config_path=args.cfg, options=_live(args)
        )
    return _report(summary)


def _cmd_info(args: argparse.Namespace) -> int:
    from .hardware import find_detector_pair, list_cameras, open_core

    settings = _settings_from_args(args)
    with open_core(args.cfg) as core:
        cameras = list_cameras(core)
        print(f"cameras in {args.cfg}: {', '.join(cameras) or 'none'}")
        pair = find_detector_pair(core, settings)
        print(f"mode:      {pair.mode.value}")
        print(f"low-dose:  {pair.lowdose}")
        print(f"reference: {pair.reference}")
        print(f"factor:    {pair.factor}")
        for reason in pair.reasons:
            print(f"  - {reason}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .io.calibration import estimate_registration, save_calibration

    reg = estimate_registration(args.run, max_pairs=args.max_pairs)
    path = save_calibration(args.run, reg)
    print(
        f"low-dose camera vs reference: shift y {reg.shift_y_px:+.3f} px, x "
        f"{reg.shift_x_px:+.3f} px (reference pixels), scale {reg.scale:.4f}, "
        f"per-pair scatter {reg.residual_px:.3f} px over {reg.n_pairs} pairs",
        file=sys.stderr,
    )
    print(path)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    targets = None
    if args.targets is not None:
        targets = [
            (tuple(a), tuple(b), float(sep))
            for a, b, sep in json.loads(args.targets.read_text())
        ]
    evaluate(args.model, args.runs, args.out, max_pairs=args.max_pairs, targets=targets)
    summary = args.out / "summary.md"
    print(summary.read_text(), file=sys.stderr)
    print(summary)
    return 0


def _load_sequence(path: Path):
    import useq

    if not path.is_file():
        raise FileNotFoundError(f"Sequence file not found: {path}")
    try:
        return useq.MDASequence.from_file(path)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a valid useq MDASequence ({exc}). Write it as JSON or "
            'YAML, e.g. {"time_plan": {"interval": 0.1, "loops": 100}}.'
        ) from exc


def _report(summary) -> int:
    print(
        f"{summary.status}: {summary.pairs}/{summary.expected_pairs} pairs "
        f"({summary.incomplete_pairs} without partner) at {summary.pairs_per_s:.1f} "
        f"pairs/s",
        file=sys.stderr,
    )
    if summary.status == "failed":
        print(f"pairscope: run failed: {summary.message}", file=sys.stderr)
    print(summary.run_dir)  # the run folder is always the last line
    return 0 if summary.status in ("completed", "canceled") else 1


if __name__ == "__main__":
    sys.exit(main())
