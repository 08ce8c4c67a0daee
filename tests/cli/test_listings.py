"""``kfnas spaces``, ``algorithms`` and ``rewards``: ``--json`` and plain text when piped.

``kfnas trials``, which needs an experiment in a store, is tested the same way in
``test_cli_trials.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyglove as pg
import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import _common as ui
from kfnas.cli import main
from kfnas.search.algorithms import ALGORITHMS
from kfnas.search.rewards import REWARDS
from kfnas.spaces import SPACES, get_space


def has_box_drawing(text: str) -> bool:
    """Whether ``text`` holds a box-drawing character (U+2500 to U+257F), as rich tables do."""
    return any("\u2500" <= ch <= "\u257f" for ch in text)


@pytest.fixture(autouse=True)
def piped_console(monkeypatch):
    """A console that is no terminal (a pipe), and narrow: nothing may fold at its width."""
    monkeypatch.setattr(cli._common, "console", Console(width=20, force_terminal=False))


def run(capsys, *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


def run_json(capsys, *argv: str):
    status, out = run(capsys, *argv, "--json")
    assert status == 0
    return json.loads(out)


def test_spaces_json_lists_every_space_with_its_exact_size(capsys):
    spaces = run_json(capsys, "spaces")
    assert [s["name"] for s in spaces] == SPACES.names()
    by_name = {s["name"]: s for s in spaces}
    spec = pg.dna_spec(get_space("mnasnet").hyper())
    assert by_name["mnasnet"] == {
        "name": "mnasnet",
        "tasks": ["classification", "detection", "torch_classification"],
        "decisions": len(spec.decision_points),
        "size": spec.space_size,
    }
    assert isinstance(by_name["mnasnet"]["size"], int)
    big = pg.dna_spec(get_space("spinenet_mbconv").hyper()).space_size
    assert by_name["spinenet_mbconv"]["size"] == big == 7387964932475008321091901849600000


def test_spaces_show_json_is_the_space_its_size_and_its_decisions(capsys):
    space = run_json(capsys, "spaces", "show", "spinenet_v2")
    spec = pg.dna_spec(get_space("spinenet_v2").hyper())
    assert (space["name"], space["size"]) == ("spinenet_v2", spec.space_size)
    assert [d["id"] for d in space["decisions"]] == [str(e.id) for e in spec.elements]
    offsets = next(d for d in space["decisions"] if d["id"] == "output_blocks[4].input_offsets")
    assert set(offsets) == {"id", "num_choices", "distinct", "sorted", "candidates"}
    assert (offsets["num_choices"], offsets["distinct"], offsets["sorted"]) == (2, True, True)
    blocks = next(d for d in space["decisions"] if "'bottleneck'" in d["candidates"])
    assert all(isinstance(c, str) for c in blocks["candidates"])


def test_algorithms_json_holds_each_algorithms_objectives_and_option_defaults(capsys):
    algorithms = run_json(capsys, "algorithms")
    assert [a["name"] for a in algorithms] == ALGORITHMS.names()
    by_name = {a["name"]: a for a in algorithms}
    assert by_name["nsga2"]["multi_objective"] is True
    assert by_name["regularized_evolution"] == {
        "name": "regularized_evolution",
        "multi_objective": False,
        "options": {"population_size": 20, "tournament_size": 5},
    }
    assert by_name["grid"]["options"] == {"full": False} and by_name["random"]["options"] == {}


def test_rewards_json_holds_each_rewards_description(capsys):
    rewards = run_json(capsys, "rewards")
    assert [r["name"] for r in rewards] == REWARDS.names()
    by_name = {r["name"]: r for r in rewards}
    assert by_name["metric"] == {"name": "metric", "description": "The quality metric alone."}
    assert "MnasNet factor per constraint" in by_name["mnas"]["description"]


def test_piped_spaces_prints_each_space_on_one_line_with_its_whole_size(capsys):
    status, out = run(capsys, "spaces")
    assert status == 0 and not has_box_drawing(out)
    lines = out.splitlines()
    assert lines[0] == "Search spaces" and lines[1].split() == [
        "space",
        "tasks",
        "decisions",
        "size",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == SPACES.names()
    for space in run_json(capsys, "spaces"):
        assert rows[space["name"]][-1] == str(space["size"]), space["name"]
        assert rows[space["name"]][-2] == str(space["decisions"])
    assert " ".join(rows["nasfpn"]) == "nasfpn detection, segmentation 28 1931334451200000"


def test_piped_spaces_show_algorithms_and_rewards_are_plain_unfolded_columns(capsys):
    status, out = run(capsys, "spaces", "show", "spinenet_v2")
    assert status == 0 and not has_box_drawing(out)
    assert out.splitlines()[0] == "spinenet_v2: 764783588047793273280921600000 architectures"
    assert out.splitlines()[1].split() == ["decision", "choose", "candidates"]
    offsets = next(line for line in out.splitlines() if "output_blocks[4].input_offsets" in line)
    assert " ".join(offsets.split()).startswith(
        "output_blocks[4].input_offsets 2 (distinct, sorted)"
    )

    status, out = run(capsys, "algorithms")
    assert status == 0 and not has_box_drawing(out)
    rows = {line.split()[0]: " ".join(line.split()) for line in out.splitlines()[2:]}
    assert list(rows) == ALGORITHMS.names()
    assert rows["regularized_evolution"] == (
        "regularized_evolution one population_size=20, tournament_size=5"
    )
    assert rows["nsga2"] == "nsga2 two or more population_size=10"

    status, out = run(capsys, "rewards")
    assert status == 0 and not has_box_drawing(out)
    rows = {line.split()[0]: " ".join(line.split()) for line in out.splitlines()[2:]}
    assert rows["mnas"] == (
        "mnas The quality metric times one MnasNet factor per constraint (see the module "
        "docstring)."
    )


def test_a_terminal_still_gets_the_boxed_table(capsys, monkeypatch):
    monkeypatch.setattr(
        cli._common, "console", Console(width=200, force_terminal=True, color_system=None)
    )
    status, out = run(capsys, "spaces")
    assert status == 0 and has_box_drawing(out)
    assert "│ nasfpn" in out and "1931334451200000" in out


def test_kfnas_spaces_into_a_real_pipe_is_plain_text():
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    code = "import sys; from kfnas.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "spaces"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "40"},
        check=True,
        timeout=300,
    )
    assert not has_box_drawing(done.stdout)
    line = next(line for line in done.stdout.splitlines() if line.startswith("spinenet_mbconv "))
    assert line.split()[-1] == "7387964932475008321091901849600000"


def test_print_table_aligns_columns_and_keeps_brackets_and_wide_cells(capsys, monkeypatch):
    ui.print_table(["a", "bb"], [["x" * 30, "[bold]y[/bold]"], ["z", "-"]], title="T")
    assert capsys.readouterr().out == (
        f"T\n{'a':30}  bb\n{'x' * 30}  [bold]y[/bold]\n{'z':30}  -\n"
    )
    monkeypatch.setattr(
        cli._common, "console", Console(width=200, force_terminal=True, color_system=None)
    )
    ui.print_table(["a"], [["[bold]y[/bold]"]])
    assert "[bold]y[/bold]" in capsys.readouterr().out


def test_print_json_lines_prints_one_object_a_line_and_nothing_for_none(capsys):
    ui.print_json([{"a": 1}, {"a": 2}], lines=True)
    assert capsys.readouterr().out == '{"a": 1}\n{"a": 2}\n'
    ui.print_json([], lines=True)
    assert capsys.readouterr().out == ""
    ui.print_json([{"size": 10**40}])
    assert json.loads(capsys.readouterr().out) == [{"size": 10**40}]
