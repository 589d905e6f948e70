"""Every option of every command explains itself and states its default."""

from __future__ import annotations

import argparse

import pytest

from pairscope.cli import _parser

PARSER = _parser()
COMMANDS = next(
    a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)
).choices


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_with_its_default(name: str) -> None:
    command = COMMANDS[name]
    formatter = command._get_formatter()
    for action in command._actions:
        if action.dest == "help":
            continue
        shown = formatter._get_help_string(action)
        assert shown and shown.strip(), f"{name} {action.dest}: no help"
        if action.option_strings and not action.required:
            says_default = "default" in shown or shown.rstrip().endswith(")")
            assert says_default, f"{name} {action.option_strings}: {shown!r}"
    text = command.format_help()
    assert ":param" not in text and "``" not in text  # no reST in --help


def test_version() -> None:
    with pytest.raises(SystemExit) as exc:
        PARSER.parse_args(["--version"])
    assert exc.value.code == 0
