"""``pairscope train``: options generated from :class:`pairscope.train.TrainConfig`.

Every field of the versioned training configuration is an option (``--batch-size``
for ``batch_size``, ``--amp/--no-amp`` for booleans), with its description and
default as help; ``--config FILE`` reads a whole configuration (JSON/YAML) that the
options then override.  The configuration used is stored in the model file.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

__all__ = ["config_from_args", "register"]

_HIDDEN = {"version"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(p: argparse.ArgumentParser, name: str, info: Any) -> None:
    """One option for one pydantic field: type, choices and help from the field."""
    ann = info.annotation
    args = typing.get_args(ann)
    optional = (
        typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in args
    )
    if optional:
        ann = next(a for a in args if a is not type(None))
    default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else default
    text = f"{info.description or name} (default: {shown})"
    kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text, "dest": name}
    if ann is bool:
        p.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kw)
    elif typing.get_origin(ann) is Literal:
        choices = typing.get_args(ann)
        p.add_argument(_flag(name), choices=choices, type=type(choices[0]), **kw)
    elif ann in (int, float, str, Path):
        metavar = {int: "N", float: "X", str: "TEXT", Path: "PATH"}[ann]
        convert = _or_none(ann) if optional else ann
        p.add_argument(_flag(name), type=convert, metavar=metavar, **kw)
    else:  # pragma: no cover - a new field type must be given a CLI form here
        raise TypeError(f"TrainConfig.{name}: no CLI form for {ann!r}")


def _or_none(kind: type) -> Any:
    """``kind``, or ``None`` for the word "none" (an optional field's unset value)."""

    def convert(text: str) -> Any:
        return None if text.strip().lower() == "none" else kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its errors
    return convert


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pairscope train``."""
    from pairscope.train import TrainConfig

    p = sub.add_parser(
        "train",
        help="train or fine-tune a model on logged pairs",
        description="Train (or fine-tune, or resume) a restoration model on the "
        "pairs of run folders. Every option below is a field of the versioned "
        "training configuration that is stored in the model file; --config FILE "
        "reads a whole configuration (JSON/YAML) that the options override.",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run folders with pairs")
    p.add_argument(
        "--out", type=Path, required=True, help="model file to write (.safetensors)"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        dest="config_file",
        help="training configuration (JSON/YAML); options override it (default: none)",
    )
    for name, info in TrainConfig.model_fields.items():
        if name not in _HIDDEN:
            _add_field(p, name, info)
    p.set_defaults(func=_cmd_train)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` of parsed options, errors as one line per option."""
    from pairscope.train import TrainConfig, TrainingError

    base: dict[str, Any] = {}
    if args.config_file is not None:
        if not args.config_file.is_file():
            raise FileNotFoundError(f"--config: no such file {args.config_file}")
        base = TrainConfig.from_file(args.config_file).model_dump()
    given = {k: getattr(args, k) for k in TrainConfig.model_fields if hasattr(args, k)}
    try:
        return TrainConfig.model_validate({**base, **given})
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"][0] if err["loc"] else None
        where = _flag(str(loc)) if loc else "options"
        got = f" (got {err['input']!r})" if loc else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise TrainingError(f"{where}: {msg}{got}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from pairscope.train import train

    config = config_from_args(args)
    result = train(list(args.runs), args.out, config)
    if result.model_path is not None:  # rank 0 (or a single process)
        val = result.info.validation if result.info else None
        if val is not None:
            psnr = "" if val.psnr_db is None else f", PSNR {val.psnr_db:.2f} dB"
            bic = "" if val.bicubic_psnr_db is None else (
                f" (bicubic {val.bicubic_psnr_db:.2f} dB)"
            )  # fmt: skip
            print(
                f"kept epoch {val.epoch} ({val.selected}): validation loss "
                f"{val.val_loss:.4f}{psnr}{bic}",
                file=sys.stderr,
            )
        print(result.model_path)
    return 0
