"""Command line: ``pairscope demo | acquire | info | calibrate | train | evaluate``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ._memory import keep_frame_memory
from .errors import PairscopeError

DEFAULT_OUT = Path("pairscope_runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    with _unbreakable_output():
        try:
            _quiet_logging()
            keep_frame_memory()
            return _run(args)
        except KeyboardInterrupt:  # before a command installed its own handler
            print("\npairscope: interrupted (Ctrl-C)", file=sys.stderr)
            return 130


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (PairscopeError, FileNotFoundError, ValueError) as exc:
        print(f"pairscope: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a size limit, a read-only folder: one line
        from ._files import os_problem

        print(f"pairscope: error: {os_problem(exc)}", file=sys.stderr)
        return 2


class _Unbreakable:
    """A stream whose reader may go away (``| head``, a closed terminal): a write
    that fails stops the output, never the run."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._broken = False

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                return int(self._stream.write(text))
            except (BrokenPipeError, OSError, ValueError):
                self._broken = True
        return len(text)

    def flush(self) -> None:
        if not self._broken:
            try:
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._broken = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _unbreakable_output() -> Iterator[None]:
    """stdout and stderr that cannot kill the run when their reader is gone."""
    saved = sys.stdout, sys.stderr
    wrapped = _Unbreakable(sys.stdout), _Unbreakable(sys.stderr)
    sys.stdout, sys.stderr = wrapped
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        for stream, original in zip(wrapped, saved, strict=True):
            if stream._broken:  # the interpreter's last flush must not fail either
                with suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), original.fileno())


def _one_line(exc: Exception) -> str:
    """An error as one line; a pydantic error as its first problem, no URL."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
        return f"{exc.title}{' ' + where if where else ''}: {msg}."
    return " ".join(str(exc).split())


def _quiet_logging() -> None:
    """Logging configured once: warnings and errors on stderr, each once, plain
    text (pymmcore-plus's own coloured stderr handler is replaced by this one; its
    log file stays)."""
    from pymmcore_plus import configure_logging

    configure_logging(log_to_stderr=False)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_pairscope", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # also for records propagated from libraries
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._pairscope = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="pairscope", description=__doc__)
    p.add_argument("--version", action="version", version=f"pairscope {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    cal = sub.add_parser(
        "calibrate", help="register the low-dose camera to the reference"
    )
    cal.add_argument("run", type=Path, help="a run folder")
    cal.add_argument(
        "--max-pairs", type=int, default=20, help="same-instant pairs to fit on (20)"
    )
    cal.set_defaults(func=_cmd_calibrate)

    _register_command_modules(sub)
    for command in sub.choices.values():  # every option's help states its default
        command.formatter_class = _with_defaults(command.formatter_class)
    return p


def _with_defaults(base: Any) -> type[argparse.HelpFormatter]:
    """``base`` that appends an option's default where its help does not say it:
    flags say they are off unless given, other options show their default value."""

    class WithDefaults(base):
        def _get_help_string(self, action: argparse.Action) -> str:
            text = action.help or ""
            said = "default" in text or text.rstrip().endswith(")")
            if not action.option_strings or said or action.default is argparse.SUPPRESS:
                return text
            if isinstance(action, argparse._StoreTrueAction):
                return f"{text} (off unless given)"
            if action.default is None:
                return text
            return f"{text} (default {action.default})"

    return WithDefaults


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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ._files import check_writable
    from .io import open_run
    from .io.calibration import estimate_registration, save_calibration

    with open_run(args.run) as run:
        check_writable(  # before minutes of work, not after them
            run.path,
            what="the camera registration (calibration.json)",
            fix="copy the run to a writable disk and calibrate the copy",
        )
        reg = estimate_registration(run, max_pairs=args.max_pairs, progress=True)
    path = save_calibration(args.run, reg)
    print(
        f"low-dose camera vs reference: shift y {reg.shift_y_px:+.3f} px, x "
        f"{reg.shift_x_px:+.3f} px (reference pixels), scale {reg.scale:.4f}, "
        f"per-pair scatter {reg.residual_px:.3f} px over {reg.n_pairs} pairs",
        file=sys.stderr,
    )
    from .rig import calibrate_run_photometry

    with open_run(args.run) as run:  # photometry: declared, else measured here
        for line in calibrate_run_photometry(run, reg):
            print(line, file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
