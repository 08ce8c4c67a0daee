"""What every command group of the CLI shares: the console, ``Command``, common arguments.

Handlers print through ``ui.console`` (``from kfnas.cli import _common as ui``), looked up at each
call, so a test can replace it. ``print_results`` is the trial table of ``kfnas trial``,
``kfnas search`` and ``kfnas run``; ``demo_overrides`` the demo's generated data, shared by
``kfnas demo`` and ``kfnas run demo``.

Listings (``kfnas spaces``, ``algorithms``, ``rewards``, ``trials``) build their rows once, as
data, and print them with ``print_listing`` (or ``print_table`` and ``print_json``): with
``--json`` (``add_json_flag``) as JSON, the records in full (a size is an integer, not text);
otherwise as a table: rich's boxed table on a terminal, and plain aligned columns when the output
is not a terminal (a pipe, a file), with no box drawing and no cell folded or cut at any width, so
that ``grep``, ``awk`` and ``cut`` see one row per line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

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


def add_json_flag(parser: argparse.ArgumentParser, what: str = "a JSON list of objects") -> None:
    """``--json``, into ``args.json``: print the listing as ``what`` instead of a table."""
    parser.add_argument("--json", action="store_true", help=f"print {what} instead of a table")


#: One column of a listing's table: its header, and the record's key (the value's text is
#: ``cell_text``) or a function of the whole record that gives the cell's text.
Column = tuple[str, str | Callable[[Mapping[str, Any]], str]]


def cell_text(value: Any) -> str:
    """A record's value as a table cell: lists joined by ``, ``, objects as ``key=value``.

    ``None``, an empty list and an empty object read ``-``.
    """
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(cell_text(v) for v in value) or "-"
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], title: str = "") -> None:
    """Prints a table: boxed on a terminal, plain aligned columns otherwise.

    On a terminal it is a rich table (a long cell folds within the terminal's width). Otherwise
    (piped, redirected) it is the title on its own line, then the header and one line per row,
    columns left-aligned and two spaces apart: no box drawing, no cell folded or cut.

    Args:
        headers: The column headers.
        rows: The rows, one text per column.
        title: The table's title, if any.
    """
    rows = [list(row) for row in rows]
    if console.is_terminal:
        table = Table(title=title or None)
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # Text: a cell's brackets are no markup.
        console.print(table)
        return
    widths = [
        max([cell_len(h), *(cell_len(row[i]) for row in rows)]) for i, h in enumerate(headers)
    ]
    lines = [title] if title else []
    for row in [list(headers), *rows]:
        padded = (
            cell + " " * (width - cell_len(cell)) for cell, width in zip(row, widths, strict=True)
        )
        lines.append("  ".join(padded).rstrip())
    console.out("\n".join(lines), highlight=False)


def print_json(data: Any, *, lines: bool = False) -> None:
    """Prints ``data`` as JSON on stdout: indented, and a newline at the end.

    Args:
        data: JSON-ready data (a value JSON cannot hold is written as its text).
        lines: Print ``data``, a list, as JSON Lines instead: one compact object per line.
    """
    if lines:
        if data:
            console.out("\n".join(json.dumps(item, default=str) for item in data), highlight=False)
        return
    console.out(json.dumps(data, indent=2, default=str), highlight=False)


def print_listing(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str = "",
    json_data: Any = None,
) -> None:
    """Prints a listing's records as JSON (``as_json``) or as a table (``print_table``).

    Args:
        records: The rows, as JSON-ready objects.
        columns: The table's columns.
        as_json: Print JSON instead of the table.
        title: The table's title.
        json_data: What the JSON is, when not ``records`` themselves (e.g. an object that holds
            them).
    """
    if as_json:
        print_json(records if json_data is None else json_data)
        return
    rows = [
        [cell(record) if callable(cell) else cell_text(record[cell]) for _, cell in columns]
        for record in records
    ]
    print_table([header for header, _ in columns], rows, title)


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
