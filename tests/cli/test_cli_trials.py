"""``kfnas trials``: a study's trials from the store, as a table or JSON lines, and its errors."""

import json
import re

import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import main
from kfnas.data import write_detection_dataset
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.stages import init_experiment
from kfnas.store import open_experiment

SPEC = """
name: trials-test
task: {kind: detection, options: {max_level: 5}}
studies:
  proxy: {space: spinenet_mbconv}
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=200, highlight=False))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    files = write_detection_dataset(tmp_path_factory.mktemp("data"), num_train=4, num_validation=2)
    return [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]


def _spec(study, trial_id, round_index=1, source=("", None)):
    return TrialSpec(
        experiment="trials-test",
        study=study,
        trial_id=trial_id,
        round=round_index,
        space="spinenet_mbconv",
        dna_json="{}",
        arch_json="{}",
        source_study=source[0],
        source_trial=source[1],
    )


@pytest.fixture
def experiment(tmp_path, data):
    """Proxy trials: 0 completed, 1 failed, 2 proposed only; validation trial 0 retrains 0."""
    uri = init_experiment(SPEC, [f"store_root={tmp_path}", *data])
    records = open_experiment(uri).records
    for trial_id in range(3):
        records.write_spec(_spec("proxy", trial_id, round_index=1 + trial_id // 2))
    metrics = {
        "AP": 0.4321,
        "latency_ms": 12.345,
        "latency_p90_ms": 14.5,
        "flops": 2.5e9,
        "params": 1234567.0,
    }
    records.write_result(
        "proxy", TrialResult(0, TrialStatus.COMPLETED, metrics, 0.41, None, "", 61)
    )
    failed = TrialResult(1, TrialStatus.INFEASIBLE, error="NaN loss at step 7", duration_s=3.0)
    records.write_result("proxy", failed)
    records.write_spec(_spec("validation", 0, source=("proxy", 0)))
    records.write_result("validation", TrialResult(0, TrialStatus.COMPLETED, {"AP": 0.5}, 0.5))
    return uri


def run(capsys, *argv):
    status = main(list(argv))
    return status, capsys.readouterr().out


def columns(line):
    """The cells of a plain (piped) table line: columns are two or more spaces apart."""
    return re.split(r" {2,}", line.strip())


def test_trials_prints_a_table_of_the_study(capsys, experiment):
    status, out = run(capsys, "trials", experiment)  # Not a terminal: plain aligned columns.
    assert status == 0
    assert not any("\u2500" <= ch <= "\u257f" for ch in out)  # No box drawing.
    header = next(line for line in out.splitlines() if line.startswith("id "))
    assert columns(header) == [
        "id",
        "round",
        "status",
        "AP",
        "reward",
        "latency ms",
        "p90 ms",
        "M mult-adds",
        "params",
        "duration",
    ]
    lines = {
        columns(line)[0]: columns(line) for line in out.splitlines() if len(columns(line)) == 10
    }
    assert lines["0"] == [
        "0",
        "1",
        "COMPLETED",
        "0.4321",
        "0.4100",
        "12.35",
        "14.50",
        "2500.0",
        "1,234,567",
        "61 s",
    ]
    assert lines["1"][2] == "INFEASIBLE" and "trial 1: INFEASIBLE: NaN loss at step 7" in out
    assert lines["2"][1:3] == ["2", "PENDING"]  # round 2
    assert out.splitlines()[0] == "Study proxy: 3 trials"


def test_trials_on_a_terminal_prints_a_boxed_table(capsys, monkeypatch, experiment):
    monkeypatch.setattr(
        cli._common, "console", Console(width=200, force_terminal=True, color_system=None)
    )
    status, out = run(capsys, "trials", experiment)
    assert status == 0
    assert "┃ id" in out and "│ COMPLETED" in out and "Study proxy: 3 trials" in out


def test_trials_lists_another_study_with_what_each_trial_retrains(capsys, experiment):
    status, out = run(capsys, "trials", experiment, "--study", "validation")
    assert status == 0
    assert "Study validation: 1 trials" in out
    header, row = out.splitlines()[1:3]
    assert columns(header)[-1] == "retrains" and columns(row)[-1] == "proxy trial 0"


def test_trials_json_prints_one_object_per_trial(capsys, experiment):
    status, out = run(capsys, "trials", experiment, "--json")
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["trial_id"], r["status"]) for r in rows] == [
        (0, "COMPLETED"),
        (1, "INFEASIBLE"),
        (2, "PENDING"),
    ]
    assert rows[0] == {
        "trial_id": 0,
        "round": 1,
        "status": "COMPLETED",
        "metric": "AP",
        "value": 0.4321,
        "reward": 0.41,
        "latency_ms": 12.345,
        "flops": 2.5e9,
        "params": 1234567.0,
        "duration_s": 61.0,
        "source": "",
        "error": "",
        "latency_p90_ms": 14.5,
        "rung": 0,
        "promoted_from": None,
        "steps": 0,
        "stopped_early": False,
        "stop_reason": "",
    }
    assert rows[1]["error"] == "NaN loss at step 7" and rows[1]["reward"] is None
    assert rows[2]["value"] is None and rows[2]["duration_s"] == 0.0


def test_trials_of_an_unknown_study_lists_the_experiments_studies(capsys, experiment):
    status, out = run(capsys, "trials", experiment, "--study", "scaling")
    assert status == 2
    text = " ".join(out.split())
    assert "has no study 'scaling'" in text and "its studies: proxy, validation, final" in text


def test_trials_of_a_uri_without_an_experiment_says_how_to_create_one(capsys, tmp_path):
    status, out = run(capsys, "trials", str(tmp_path / "nothing-here"))
    assert status == 2
    assert "no experiment at" in out and "kfnas init" in " ".join(out.split())
