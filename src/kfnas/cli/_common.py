"""What every command group of the CLI shares: the console, ``Command``, common arguments.

Handlers print through ``ui.console`` (``from kfnas.cli import _common as ui``), looked up at each
call, so a test can replace it. ``print_results`` is the trial table of ``kfnas trial``,
``kfnas search`` and ``kfnas run``; ``demo_overrides`` the demo's generated data, shared by
``kfnas demo`` and ``kfnas run demo``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kfnas.config.spec import SpecError
from kfnas.records.trial import TrialResult
from kfnas.views.rows import measure_cells, measure_headers, trial_row

console = Console(highlight=False)


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``kfnas`` subcommand.

    Attributes:
        help: One line for ``kfnas --help`` and the command's description.
        run: The handler: parsed arguments -> exit status.
        add_arguments: Declares its arguments on its parser; ``None`` for none.
    """

    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def add_overrides(parser: argparse.ArgumentParser, what: str = "the spec") -> None:
    """``--set KEY=VALUE`` (repeatable), into ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"dotted override of {what}, e.g. --set budget.train_steps=50 (repeatable)",
    )


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    """The spec file positional and its ``--set`` overrides."""
    parser.add_argument("spec", help="experiment spec YAML file")
    add_overrides(parser)


def spec_text(path: str) -> str:
    """The text of a spec file.

    Raises:
        SpecError: The file does not exist.
    """
    if not Path(path).is_file():
        raise SpecError(f"spec file {path!r} does not exist")
    return Path(path).read_text()


def print_results(results: dict[int, TrialResult], metric: str, title: str = "") -> None:
    """Prints trial results as a table: id, status and the measured columns."""
    table = Table("trial", "status", *measure_headers(metric), title=title or None)
    for trial_id, result in results.items():
        row = trial_row(trial_id, result, metric)
        table.add_row(str(trial_id), row.status, *measure_cells(row))
    console.print(table)


def demo_overrides(out: Path, step: str = "") -> list[str]:
    """Generates the demo's detection data under ``out`` and returns the spec overrides using it.

    Args:
        out: The folder of the demo's data (``out/data``) and store (``out/store``).
        step: Text printed before what was generated (e.g. the step's number).
    """
    from kfnas.data import write_detection_dataset

    files = write_detection_dataset(out / "data", num_train=128, num_validation=32)
    console.print(f"{step}Generated detection TFRecords and COCO annotations in {files.out_dir}")
    return [
        f"store_root={out / 'store'}",
        f"data.train={files.train_pattern}",
        f"data.validation={files.validation_pattern}",
        f"data.annotations={files.annotations}",
    ]
