"""The ``kfnas`` command line.

Each command is one small handler function registered in ``_COMMANDS`` with its argument setup; the
handlers only parse, call the library (mostly ``kfnas.stages``) and print. Errors a user can fix
(a bad spec, an unknown name) print one clear message and exit with status 2, without a traceback.

To add a command: write ``_add_<name>(parser)`` and ``_run_<name>(args) -> int`` and add one entry
to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kfnas.registry import RegistryError
from kfnas.spec import SpecError
from kfnas.version import __version__

console = Console(highlight=False)


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set budget.train_steps=50 (repeatable)",
    )


def _add_spaces(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["show"], help="show one space's decisions")
    parser.add_argument("name", nargs="?", help="the space to show (with `show`)")


def _run_spaces(args: argparse.Namespace) -> int:
    import pyglove as pg

    from kfnas.spaces import SPACES, get_space

    if args.action == "show":
        if not args.name:
            raise SpecError("`kfnas spaces show` needs a space name: kfnas spaces show NAME")
        spec = pg.dna_spec(get_space(args.name).hyper())
        table = Table("decision", "choose", title=f"{args.name}: {spec.space_size} architectures")
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
        console.print(table)
        return 0

    table = Table("space", "tasks", "decisions", title="Search spaces")
    table.add_column("size", overflow="fold")
    for name in SPACES.names():
        space = SPACES.get(name)
        spec = pg.dna_spec(space.hyper())
        table.add_row(
            name, ", ".join(space.tasks), str(len(spec.decision_points)), str(spec.space_size)
        )
    console.print(table)
    return 0


def _run_algorithms(args: argparse.Namespace) -> int:
    from kfnas.search.algorithms import ALGORITHMS

    table = Table("algorithm", "objectives", "options (defaults)", title="Search algorithms")
    for name in ALGORITHMS.names():
        algorithm = ALGORITHMS.get(name)
        options = ", ".join(f"{k}={v}" for k, v in algorithm.options.items()) or "-"
        table.add_row(name, "two or more" if algorithm.multi_objective else "one", options)
    console.print(table)
    return 0


def _run_rewards(args: argparse.Namespace) -> int:
    from kfnas.rewards import REWARDS

    table = Table("reward", "what it computes", title="Rewards")
    for name in REWARDS.names():
        doc = (REWARDS.get(name).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, doc)
    console.print(table)
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    from kfnas.spec import load_spec

    spec = load_spec(args.spec, args.overrides).validate().resolved()
    console.print_json(spec.to_json())
    console.print(f"[green]{args.spec} is valid[/green]")
    return 0


def _run_init(args: argparse.Namespace) -> int:
    from kfnas.stages import init_experiment

    path = Path(args.spec)
    if not path.is_file():
        raise SpecError(f"spec file {args.spec!r} does not exist")
    console.print(init_experiment(path.read_text(), args.overrides))
    return 0


def _add_propose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI printed by `kfnas init`")
    parser.add_argument("--study", default="proxy", help="study name (default: proxy)")
    parser.add_argument("--round", type=int, required=True, help="round to propose, from 1")


def _run_propose(args: argparse.Namespace) -> int:
    from kfnas.stages import propose_trials

    ids = propose_trials(args.experiment, args.study, args.round)
    console.print(" ".join(map(str, ids)))
    return 0


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for the demo's store")


def _run_demo(args: argparse.Namespace) -> int:
    from kfnas.stages import init_experiment, open_experiment, propose_trials

    out = Path(args.out).resolve()
    spec_yaml = importlib.resources.files("kfnas").joinpath("demo.yaml").read_text()
    console.rule("kfnas demo: the search side of a SpineNet-MBConv detection experiment")
    uri = init_experiment(spec_yaml, [f"store_root={out / 'store'}"])
    exp = open_experiment(uri)
    study = exp.spec.study("proxy")
    console.print(f"1. Validated the spec and wrote the resolved experiment: [bold]{uri}[/bold]")
    console.print(
        f"   space {study.space}, algorithm {study.algorithm.name}, "
        f"{study.budget.trials_per_round} trials per round, objective {exp.spec.objectives.metric} "
        f"with {len(exp.spec.objectives.constraints)} constraint(s)"
    )
    ids = propose_trials(uri, "proxy", 1)
    table = Table("trial", "round", "trial.json (DNA, architecture JSON, budget, seed)")
    for trial_id in ids:
        table.add_row(str(trial_id), "1", exp.layout.trial_spec("proxy", trial_id))
    console.print("2. The stateless controller proposed round 1 from the (empty) stored history:")
    console.print(table)
    again = propose_trials(uri, "proxy", 1)
    console.print(
        f"3. Proposing round 1 again (a resubmitted pipeline) returned {again}: no new work."
    )
    console.rule("What this demo does not do yet")
    console.print(
        "Training and evaluating the trials (RetinaNet on generated TFRecords), rewards from real "
        "metrics, later rounds and the KFP pipeline arrive with the next issues; `make demo` will "
        "then run the whole search."
    )
    console.print(f"Results of this run: [bold]{out / 'store'}[/bold]")
    return 0


_Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, _Handler]] = {
    "spaces": ("list the search spaces, or `show NAME` its decisions", _add_spaces, _run_spaces),
    "algorithms": ("list the search algorithms and their options", None, _run_algorithms),
    "rewards": ("list the reward functions", None, _run_rewards),
    "validate": ("check a spec and print it resolved", _add_spec_args, _run_validate),
    "init": ("validate a spec and create the experiment in its store", _add_spec_args, _run_init),
    "propose": ("propose (or resume) one round of trials of a study", _add_propose, _run_propose),
    "demo": ("run the richest flow kfnas can run locally today", _add_demo, _run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands."""
    parser = argparse.ArgumentParser(prog="kfnas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kfnas {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if add_args is not None:
            add_args(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``kfnas`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command][2](args)
    except (SpecError, RegistryError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
