"""The kfnas command line: listings, validation messages and exit codes, the demo."""

from pathlib import Path

import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import main

SPEC = Path(__file__).parents[2] / "src" / "kfnas" / "demo.yaml"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # CI has no terminal: rich would fold long cells at 80 columns.
    monkeypatch.setattr(cli, "console", Console(width=200, highlight=False))


def run(capsys, *argv):
    status = main(list(argv))
    return status, capsys.readouterr().out


def words(text):
    return " ".join(text.split())


def test_spaces_lists_exact_sizes(capsys):
    status, out = run(capsys, "spaces")
    assert status == 0
    assert "7387964932475008321091901849600000" in out
    assert "spinenet_v2" in out and "detection" in out


def test_spaces_show_prints_decisions_and_candidates(capsys):
    status, out = run(capsys, "spaces", "show", "spinenet_v2")
    assert status == 0
    assert "764783588047793273280921600000 architectures" in out
    assert "intermediate_block_levels" in out and "10 (distinct)" in out
    assert "output_blocks[4].input_offsets" in out and "2 (distinct, sorted)" in out
    assert "'bottleneck'" in out
    assert run(capsys, "spaces", "show", "spinenet_v3")[0] == 2
    assert run(capsys, "spaces", "show")[0] == 2


def test_algorithms_and_rewards(capsys):
    assert "population_size=20" in run(capsys, "algorithms")[1]
    assert "MnasNet" in run(capsys, "rewards")[1]


def test_validate_good_and_bad(capsys, tmp_path):
    status, out = run(capsys, "validate", str(SPEC), "--set", f"store_root={tmp_path}")
    assert status == 0 and "is valid" in out
    status, out = run(capsys, "validate", str(SPEC), "--set", "budget.rounds=0")
    assert status == 2
    assert "budget.rounds must be a positive integer, got 0" in words(out)
    status, out = run(capsys, "validate", "missing.yaml")
    assert (status, "spec file 'missing.yaml' does not exist" in words(out)) == (2, True)


def test_init_then_propose(capsys, tmp_path):
    status, out = run(capsys, "init", str(SPEC), "--set", f"store_root={tmp_path}")
    assert status == 0
    uri = out.strip()
    assert uri.endswith("/demo")
    assert run(capsys, "propose", uri, "--round", "1") == (0, "1 2 3\n")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


def test_demo_proposes_and_resumes(capsys, tmp_path):
    status, out = run(capsys, "demo", "--out", str(tmp_path))
    assert status == 0
    assert "returned [1, 2, 3]: no new work" in words(out)
    assert "What this demo does not do yet" in out
    trials = tmp_path / "store" / "demo" / "studies" / "proxy" / "trials"
    assert sorted(p.name for p in trials.iterdir()) == ["000001", "000002", "000003"]
