"""``kfnas trial`` starts fresh unless told to resume the same architecture.

The training itself is replaced by a stand-in that records which work folder it got and whether a
checkpoint was already there (``tests/cli/test_cli.py`` trains a real trial).
"""

import json
from pathlib import Path

import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import main
from kfnas.records.trial import TrialResult, TrialStatus

SPEC = Path(__file__).parents[2] / "src" / "kfnas" / "demo.yaml"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=200, highlight=False))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    argv = ["make-data", "detection", "--out", str(out), "--train", "4", "--validation", "2"]
    assert main(argv) == 0
    return [
        "--set", f"data.train={out}/train-*.tfrecord",
        "--set", f"data.validation={out}/validation-*.tfrecord",
    ]  # fmt: skip


@pytest.fixture
def trainings(monkeypatch):
    """Stands in for the training: records (found checkpoint step, architecture), saves step 5."""
    from kfnas.training import runner

    seen = []

    def train(spec, trial, work_dir):
        checkpoint = Path(work_dir) / runner.MODEL_DIR / "checkpoint"
        seen.append((checkpoint.read_text() if checkpoint.exists() else None, trial.arch_json))
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(f"step 5 of {json.loads(trial.arch_json)['_type']}")
        (Path(work_dir) / runner.LOGS_DIR).mkdir(exist_ok=True)
        return TrialResult(trial.trial_id, TrialStatus.COMPLETED, {"AP": 0.5}, reward=0.5)

    monkeypatch.setattr(runner, "execute_trial", train)
    return seen


def _trial(capsys, data, out, *flags):
    status = main(["trial", str(SPEC), *data, "--out", str(out), *flags])
    return status, " ".join(capsys.readouterr().out.split())


def test_each_run_starts_fresh_and_resume_continues_the_same_architecture(
    capsys, tmp_path, data, trainings
):
    out = tmp_path / "work"
    assert _trial(capsys, data, out, "--seed", "1")[0] == 0
    first_arch = trainings[-1][1]
    assert trainings[-1][0] is None
    assert json.loads((out / "architecture.json").read_text()) == json.loads(first_arch)
    status, text = _trial(capsys, data, out, "--seed", "1")  # the same trial again: fresh
    assert status == 0 and trainings[-1][0] is None
    assert "the previous trial's model/ and logs/ removed" in text
    status, text = _trial(capsys, data, out, "--seed", "1", "--resume")
    assert status == 0 and trainings[-1][0] is not None  # continued from the checkpoint
    assert "Resuming the trial in" in text
    arch = tmp_path / "arch.json"
    arch.write_text(first_arch)
    assert _trial(capsys, data, out, "--arch", str(arch), "--resume")[0] == 0  # same, as a file
    assert trainings[-1][0] is not None


def test_resume_refuses_another_architecture(capsys, tmp_path, data, trainings):
    out = tmp_path / "work"
    assert _trial(capsys, data, out, "--seed", "1")[0] == 0
    status, text = _trial(capsys, data, out, "--seed", "2", "--resume")
    assert status == 2 and len(trainings) == 1
    assert "holds a trial of another architecture" in text
    assert f"--arch {out / 'architecture.json'} --resume" in text
    assert (out / "model" / "checkpoint").exists()  # left as it was
    assert _trial(capsys, data, out, "--seed", "2")[0] == 0  # without --resume: fresh
    assert trainings[-1][0] is None and trainings[-1][1] != trainings[0][1]


def test_nothing_to_resume_and_foreign_folders_are_refused(capsys, tmp_path, data, trainings):
    status, text = _trial(capsys, data, tmp_path / "new", "--resume")
    assert status == 2 and "holds no trial to resume (no trial.json)" in text
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    status, text = _trial(capsys, data, mine)
    assert status == 2 and "holds files that are not a kfnas trial's (notes.txt)" in text
    assert (mine / "notes.txt").read_text() == "keep" and trainings == []
