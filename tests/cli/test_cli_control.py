"""``kfnas status`` and ``kfnas stop``: a running search seen and steered through the store."""

from __future__ import annotations

import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import main
from kfnas.stages._control import ControllerState, acquire, read_state, stop_requested
from kfnas.store import open_experiment, open_store
from kfnas.store.layout import ExperimentLayout
from kfnas.validation import experiment_spec

SPEC = """
name: control-test
task: {kind: classification}
studies:
  proxy: {space: mnasnet}
budget: {rounds: 3, trials_per_round: 4}
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=200, highlight=False))


@pytest.fixture
def exp(tmp_path):
    spec = experiment_spec(SPEC, [f"store_root={tmp_path}"])
    open_store(str(tmp_path)).write_text(
        ExperimentLayout(spec.name).experiment_json(), spec.to_json()
    )
    return open_experiment(f"{tmp_path}/{spec.name}")


def run(capsys, *argv):
    status = main(list(argv))
    return status, " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_status_shows_slots_counts_and_where_trials_run(exp, capsys):
    assert run(capsys, "status", exp.uri)[1].startswith("No search controller has run on")
    state = ControllerState(
        "run-7", "proxy", parallelism=4, budget=12, proposed=6, completed=3, failed=1,
        running={"5": {"job": "kfnas-x-5", "pod": "kfnas-x-5-abcde", "log": "kubectl logs x"},
                 "6": {"job": "kfnas-x-6"}},
    )  # fmt: skip
    acquire(exp, state, 1000.0)
    status, out = run(capsys, "status", exp.uri)
    assert status == 0
    assert "proxy running run-7" in out and "2/4 busy 6/12 3 1" in out
    assert "proxy trial 5 running: job kfnas-x-5, log kubectl logs x, pod kfnas-x-5-abcde" in out


def test_stop_asks_the_running_controller_and_only_it(exp, capsys):
    status, out = run(capsys, "stop", exp.uri)
    assert status == 1 and "nothing to stop" in out
    acquire(exp, ControllerState("run-7", "proxy", parallelism=2), 1000.0)
    status, out = run(capsys, "stop", exp.uri)
    assert status == 0 and "Asked the proxy search of run run-7 to stop launching trials" in out
    assert stop_requested(exp, "proxy", "run-7")
    assert not stop_requested(exp, "proxy", "run-8")  # a later run of the experiment searches on
    assert read_state(exp, "proxy").state == "running"  # the controller itself says when it stops
