"""``kfnas spaces``, ``algorithms`` and ``rewards``: what the registries offer, as tables or JSON.

Each listing builds its records once, as JSON-ready objects (``_<name>_records``), and prints
them with ``ui.print_listing``: with ``--json`` as a JSON list of those objects, otherwise as a
table of its ``_<NAME>_COLUMNS`` (boxed on a terminal, plain aligned columns when piped).

To add a listing: write ``_<name>_records`` and ``_<NAME>_COLUMNS``, a ``_run_<name>`` that passes
them to ``ui.print_listing`` with ``as_json=args.json``, and add one entry to ``COMMANDS`` whose
arguments include ``ui.add_json_flag`` (``_add_json``, or its own ``_add_<name>``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from kfnas.cli import _common as ui
from kfnas.config.spec import SpecError


def _add_json(parser: argparse.ArgumentParser) -> None:
    ui.add_json_flag(parser)


def _add_spaces(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["show"], help="show one space's decisions")
    parser.add_argument("name", nargs="?", help="the space to show (with `show`)")
    ui.add_json_flag(
        parser, "a JSON list of objects (with `show`: the space, its size and its decisions)"
    )


_SPACE_COLUMNS: list[ui.Column] = [
    ("space", "name"),
    ("tasks", "tasks"),
    ("decisions", "decisions"),
    ("size", "size"),
]


def _space_records() -> list[dict[str, Any]]:
    """Every space: name, tasks, number of decisions and size (the exact number of networks)."""
    import pyglove as pg

    from kfnas.spaces import SPACES

    records = []
    for name in SPACES.names():
        space = SPACES.get(name)
        spec = pg.dna_spec(space.hyper())
        records.append(
            {
                "name": name,
                "tasks": list(space.tasks),
                "decisions": len(spec.decision_points),
                "size": spec.space_size,
            }
        )
    return records


def _choose(decision: Mapping[str, Any]) -> str:
    """How many candidates a decision picks, and whether they repeat or come sorted."""
    if decision["num_choices"] == 1:
        return "1"
    kind = "distinct" if decision["distinct"] else "repeats"
    return f"{decision['num_choices']} ({kind}{', sorted' if decision['sorted'] else ''})"


_DECISION_COLUMNS: list[ui.Column] = [
    ("decision", "id"),
    ("choose", _choose),
    ("candidates", "candidates"),
]


def _space_record(name: str) -> dict[str, Any]:
    """One space: its name, size and decisions (id, what it picks and its candidates as text)."""
    import pyglove as pg

    from kfnas.spaces import get_space

    spec = pg.dna_spec(get_space(name).hyper())
    decisions = [
        {
            "id": str(element.id),
            "num_choices": element.num_choices,
            "distinct": bool(element.distinct),
            "sorted": bool(element.sorted),
            "candidates": [str(v) for v in element.literal_values],
        }
        for element in spec.elements
    ]
    return {"name": name, "size": spec.space_size, "decisions": decisions}


def _run_spaces(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise SpecError("`kfnas spaces show` needs a space name: kfnas spaces show NAME")
        space = _space_record(args.name)
        ui.print_listing(
            space["decisions"],
            _DECISION_COLUMNS,
            as_json=args.json,
            title=f"{space['name']}: {space['size']} architectures",
            json_data=space,
        )
        return 0
    ui.print_listing(_space_records(), _SPACE_COLUMNS, as_json=args.json, title="Search spaces")
    return 0


_ALGORITHM_COLUMNS: list[ui.Column] = [
    ("algorithm", "name"),
    ("objectives", lambda r: "two or more" if r["multi_objective"] else "one"),
    ("options (defaults)", "options"),
]


def _algorithm_records() -> list[dict[str, Any]]:
    """Every algorithm: name, whether it is multi-objective, and its options' defaults."""
    from kfnas.search.algorithms import ALGORITHMS

    return [
        {
            "name": name,
            "multi_objective": bool(ALGORITHMS.get(name).multi_objective),
            "options": dict(ALGORITHMS.get(name).options),
        }
        for name in ALGORITHMS.names()
    ]


def _run_algorithms(args: argparse.Namespace) -> int:
    ui.print_listing(
        _algorithm_records(), _ALGORITHM_COLUMNS, as_json=args.json, title="Search algorithms"
    )
    return 0


_REWARD_COLUMNS: list[ui.Column] = [("reward", "name"), ("what it computes", "description")]


def _reward_records() -> list[dict[str, Any]]:
    """Every reward: name and what it computes (its docstring's first paragraph, on one line)."""
    from kfnas.search.rewards import REWARDS

    records = []
    for name in REWARDS.names():
        first_paragraph = (REWARDS.get(name).__doc__ or "").strip().split("\n\n")[0]
        records.append({"name": name, "description": " ".join(first_paragraph.split())})
    return records


def _run_rewards(args: argparse.Namespace) -> int:
    ui.print_listing(_reward_records(), _REWARD_COLUMNS, as_json=args.json, title="Rewards")
    return 0


COMMANDS = {
    "spaces": ui.Command(
        "list the search spaces, or `show NAME` its decisions", _run_spaces, _add_spaces
    ),
    "algorithms": ui.Command(
        "list the search algorithms and their options", _run_algorithms, _add_json
    ),
    "rewards": ui.Command("list the reward functions", _run_rewards, _add_json),
}
