"""The ``kfnas`` command line.

Commands come in groups, one module each: ``catalog`` (spaces, algorithms, rewards),
``experiment`` (validate, init, propose, make-data, convert-kitti, trial, search, trials, demo),
``control`` (status, stop: a running search), ``dashboard`` (the live report of an experiment,
served on localhost) and ``pipeline`` (compile, run, submit, schedule; the only group that
imports kfp).
Each group's ``COMMANDS`` maps a name to a ``_common.Command`` (help, handler, arguments);
``build_parser`` assembles them.
Handlers only parse, call the library and print. Errors a user can fix (a bad spec, an unknown
name) print one clear message and exit with status 2, without a traceback.

To add a command: write its handler (and argument setup) in its group's module and add one entry
to that module's ``COMMANDS``; a new group is a module with a ``COMMANDS`` added to ``_GROUPS``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kfnas.cli import _common, catalog, control, dashboard, experiment, pipeline
from kfnas.config.spec import SpecError
from kfnas.registry import RegistryError
from kfnas.version import __version__

_GROUPS = (catalog, experiment, control, dashboard, pipeline)

#: Every command, by name, in the order ``kfnas --help`` lists them.
COMMANDS: dict[str, _common.Command] = {
    name: command for group in _GROUPS for name, command in group.COMMANDS.items()
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands."""
    parser = argparse.ArgumentParser(prog="kfnas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kfnas {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sub)
    return parser


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ and deprecation chatter off a person's console (errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # Python errors still surface in full.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``kfnas`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        return COMMANDS[args.command].run(args)
    except (SpecError, RegistryError) as e:
        _common.console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
