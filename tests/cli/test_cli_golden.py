"""Golden test: the commands and flags of ``kfnas`` never change by accident.

Every subcommand's options (flags, dests, defaults, choices) and positionals are compared with
``tests/golden/cli.json``. A deliberate change regenerates it with ``KFNAS_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from kfnas.cli import build_parser

GOLDEN = Path(__file__).parent.parent / "golden" / "cli.json"


def _describe(parser: argparse.ArgumentParser) -> dict[str, dict]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        out[action.dest] = {
            "flags": list(action.option_strings),
            "default": repr(action.default),
            "choices": sorted(map(str, action.choices)) if action.choices else None,
            "nargs": repr(action.nargs),
            "required": action.required,
        }
    return out


def _commands() -> dict[str, dict]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: _describe(command) for name, command in sorted(sub.choices.items())}


def test_cli_commands_and_flags_match_the_golden_file() -> None:
    commands = _commands()
    if os.environ.get("KFNAS_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(commands, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(commands) == sorted(golden)
    for name, options in golden.items():
        assert commands[name] == options, f"kfnas {name}"
