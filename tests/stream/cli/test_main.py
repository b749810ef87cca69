"""The command line: every command and option says what it does."""

from __future__ import annotations

import argparse
import re

import pytest

from stream.cli.main import build_parser, main


def commands(parser: argparse.ArgumentParser, path: str = "shiftwatch") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help() -> None:
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            words = re.sub(r"\(default: [^)]*\)", "", action.help or "")
            assert re.search(r"[a-z]{3}", words), f"{path} {'/'.join(action.option_strings) or action.dest}: no help"


def test_help_renders_for_every_command(capsys) -> None:
    for path, _ in commands(build_parser()):
        with pytest.raises(SystemExit) as done:
            main([*path.split()[1:], "--help"])
        assert done.value.code == 0 and "usage:" in capsys.readouterr().out
