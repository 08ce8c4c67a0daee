"""``kfnas spaces``, ``algorithms`` and ``rewards``: what the registries offer, as tables.

To add a listing: write ``_run_<name>`` (and ``_add_<name>`` if it takes arguments) and add one
entry to ``COMMANDS``.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from kfnas.cli import _common as ui
from kfnas.config.spec import SpecError


def _add_spaces(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["show"], help="show one space's decisions")
    parser.add_argument("name", nargs="?", help="the space to show (with `show`)")


def _show_space(name: str) -> None:
    import pyglove as pg

    from kfnas.spaces import get_space

    spec = pg.dna_spec(get_space(name).hyper())
    table = Table("decision", "choose", title=f"{name}: {spec.space_size} architectures")
    table.add_column("candidates", overflow="fold")
    for element in spec.elements:
        rule = f"{element.num_choices}" + (
            f" ({'distinct' if element.distinct else 'repeats'}"
            f"{', sorted' if element.sorted else ''})"
            if element.num_choices > 1
            else ""
        )
        values = ", ".join(str(v) for v in element.literal_values)
        table.add_row(str(element.id), rule, values)
    ui.console.print(table)


def _run_spaces(args: argparse.Namespace) -> int:
    import pyglove as pg

    from kfnas.spaces import SPACES

    if args.action == "show":
        if not args.name:
            raise SpecError("`kfnas spaces show` needs a space name: kfnas spaces show NAME")
        _show_space(args.name)
        return 0
    table = Table("space", "tasks", "decisions", title="Search spaces")
    table.add_column("size", overflow="fold")
    for name in SPACES.names():
        space = SPACES.get(name)
        spec = pg.dna_spec(space.hyper())
        table.add_row(
            name, ", ".join(space.tasks), str(len(spec.decision_points)), str(spec.space_size)
        )
    ui.console.print(table)
    return 0


def _run_algorithms(args: argparse.Namespace) -> int:
    from kfnas.search.algorithms import ALGORITHMS

    table = Table("algorithm", "objectives", "options (defaults)", title="Search algorithms")
    for name in ALGORITHMS.names():
        algorithm = ALGORITHMS.get(name)
        options = ", ".join(f"{k}={v}" for k, v in algorithm.options.items()) or "-"
        table.add_row(name, "two or more" if algorithm.multi_objective else "one", options)
    ui.console.print(table)
    return 0


def _run_rewards(args: argparse.Namespace) -> int:
    from kfnas.search.rewards import REWARDS

    table = Table("reward", "what it computes", title="Rewards")
    for name in REWARDS.names():
        doc = (REWARDS.get(name).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, doc)
    ui.console.print(table)
    return 0


COMMANDS = {
    "spaces": ui.Command(
        "list the search spaces, or `show NAME` its decisions", _run_spaces, _add_spaces
    ),
    "algorithms": ui.Command("list the search algorithms and their options", _run_algorithms),
    "rewards": ui.Command("list the reward functions", _run_rewards),
}
