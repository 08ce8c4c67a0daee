"""Commands that look at and steer a running search: ``kfnas status`` and ``kfnas stop``.

Both read the search controllers' ``controller.json`` in the store (``kfnas.stages._control``), so
they work from any machine that can read the store, while the pipeline runs on a cluster:
``status`` shows each searched study's controller (state, heartbeat, slots, counts, the running
trials and where their pods and logs are); ``stop`` asks a study's controller to stop launching
trials: the running ones finish, and the pipeline goes on to validation with the best so far.

To add a command about a running search: write its handler here and add it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from kfnas.cli import _common as ui
from kfnas.stages import ControllerState, read_state, request_stop
from kfnas.stages._control import HOLDING
from kfnas.store import open_experiment

#: The studies a controller searches, in chain order.
_SEARCHED = ("proxy", "scaling", "augmentation")


def _add_experiment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI (<store_root>/<name>)")
    parser.add_argument(
        "--study", default="", help="one study (default: every searched study / the running one)"
    )


def _states(uri: str, study: str) -> list[ControllerState]:
    exp = open_experiment(uri)
    names = [study] if study else [s for s in exp.spec.studies if s in _SEARCHED]
    return [state for name in names if (state := read_state(exp, name)) is not None]


def _run_status(args: argparse.Namespace) -> int:
    states = _states(args.experiment, args.study)
    if not states:
        ui.console.print(f"No search controller has run on {args.experiment} yet.")
        return 0
    now = time.time()
    table = Table(title=f"Search controllers of {args.experiment}")
    for name in ("study", "state", "run", "heartbeat", "slots", "proposed", "completed", "failed",
                 "slot use"):  # fmt: skip
        table.add_column(name, overflow="fold")
    for s in states:
        table.add_row(
            s.study,
            s.state + (f" ({s.reason})" if s.reason else ""),
            s.run_id,
            f"{now - s.heartbeat:.0f} s ago",
            f"{len(s.running)}/{s.parallelism} busy",
            f"{s.proposed}/{s.budget}",
            str(s.completed),
            str(s.failed),
            f"{s.utilization:.0%}",
        )
    ui.console.print(table)
    for s in states:
        for trial_id, where in sorted(s.running.items(), key=lambda item: int(item[0])):
            place = ", ".join(f"{key} {value}" for key, value in sorted(where.items()))
            ui.console.print(f"{s.study} trial {trial_id} running: {place}", soft_wrap=True)
    return 0


def _run_stop(args: argparse.Namespace) -> int:
    exp = open_experiment(args.experiment)
    running = [s for s in _states(args.experiment, args.study) if s.state in HOLDING]
    if not running:
        ui.console.print(
            f"No search controller is running on {args.experiment}"
            + (f" study {args.study}" if args.study else "")
            + ": nothing to stop."
        )
        return 1
    for state in running:
        request_stop(exp, state.study)
        ui.console.print(
            f"Asked the {state.study} search of run {state.run_id} to stop launching trials; "
            f"its {len(state.running)} running trials finish, then the pipeline goes on with the "
            f"best so far (kfnas status {args.experiment} follows it)."
        )
    return 0


COMMANDS = {
    "status": ui.Command(
        "show a search's controllers: slots, running trials, finished and failed counts",
        _run_status,
        _add_experiment,
    ),
    "stop": ui.Command(
        "ask a running search to stop launching trials (running ones finish)",
        _run_stop,
        _add_experiment,
    ),
}
