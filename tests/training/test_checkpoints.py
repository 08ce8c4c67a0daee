"""Trial checkpoints in the store; their settings, attempt records, and NaN evaluations.

Checkpoints are kept in two slots with a marker written last; the settings that schedule them and
bound attempts are checked before any trial; results count attempts; a NaN or infinite evaluation
never wins the best-evaluation pick.

The store protocol is tested here without TensorFlow, on fake checkpoint files; the trainer's
schedule and a real restore are in ``test_trainer.py``, killed processes in
``tests/faults/test_resume.py``.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest

from kfnas.config.spec import BudgetSpec, SpecError
from kfnas.records.trial import TrialAttempt, TrialResult, TrialStatus
from kfnas.store.local import LocalStore
from kfnas.training.checkpoints import (
    MARKER,
    CheckpointUploader,
    TrialCheckpoints,
)
from kfnas.validation import experiment_spec

GOLDEN = Path(__file__).parents[1] / "golden" / "records"
FOLDER = "exp/studies/proxy/trials/000001/checkpoints"


def fake_checkpoint(folder: Path, step: int, payload: bytes = b"weights") -> str:
    """The files a ``CheckpointManager`` saves at ``step``; returns their prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ckpt-{step}.index").write_bytes(b"index %d" % step)
    (folder / f"ckpt-{step}.data-00000-of-00001").write_bytes(payload + b" %d" % step)
    return str(folder / f"ckpt-{step}")


def staged(tmp_path: Path, step: int) -> Path:
    folder = tmp_path / f"staged-{step}"
    (folder / "logs" / "train").mkdir(parents=True)
    (folder / "ckpt.index").write_bytes(b"index %d" % step)
    (folder / "ckpt.data-00000-of-00001").write_bytes(b"weights %d" % step)
    (folder / "logs" / "train" / "events.out.tfevents.1").write_bytes(b"up to %d" % step)
    return folder


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_a_checkpoint_is_complete_once_its_marker_is_written(store, tmp_path):
    stored = TrialCheckpoints(store, FOLDER)
    assert stored.latest() is None
    written = stored.write(10, 1, staged(tmp_path, 10))
    assert stored.latest() == written
    assert (written.step, written.attempt, written.slot) == (10, 1, "slot-0")
    assert written.files == {
        "ckpt.data-00000-of-00001": len(b"weights 10"),
        "ckpt.index": len(b"index 10"),
        "logs/train/events.out.tfevents.1": len(b"up to 10"),
    }
    marker = json.loads(store.read_text(f"{FOLDER}/slot-0/{MARKER}"))
    assert marker["state"] == "complete" and marker["step"] == 10


def test_slots_alternate_and_keep_the_newest_two(store, tmp_path):
    stored = TrialCheckpoints(store, FOLDER)
    for step in (10, 20, 30, 40):
        stored.write(step, 1, staged(tmp_path, step))
    assert [(c.step, c.slot) for c in stored.complete()] == [(30, "slot-0"), (40, "slot-1")]
    assert sorted(store.list_children(FOLDER)) == ["slot-0", "slot-1"]  # nothing piles up


class _DiesAfter(LocalStore):
    """A store whose writer is killed after ``writes`` more object writes."""

    def __init__(self, root: Path, writes: int) -> None:
        super().__init__(root)
        self.writes = writes

    def write_bytes(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        if self.writes == 0:
            raise KeyboardInterrupt("killed")
        self.writes -= 1
        super().write_bytes(path, data, if_absent=if_absent)


@pytest.mark.parametrize("writes", [1, 2, 3, 4])
def test_a_partial_checkpoint_is_ignored_and_the_previous_one_stays(tmp_path, writes):
    root = tmp_path / "store"
    TrialCheckpoints(LocalStore(root), FOLDER).write(10, 1, staged(tmp_path, 10))
    TrialCheckpoints(LocalStore(root), FOLDER).write(20, 1, staged(tmp_path, 20))
    dying = TrialCheckpoints(_DiesAfter(root, writes), FOLDER)
    with pytest.raises(KeyboardInterrupt):  # killed midway through the slot of step 10
        dying.write(30, 2, staged(tmp_path, 30))
    stored = TrialCheckpoints(LocalStore(root), FOLDER)
    assert [c.step for c in stored.complete()] == [20]
    assert stored.restore(stored.latest(), tmp_path / "model", tmp_path / "logs")
    assert (tmp_path / "model" / "ckpt-20.index").read_bytes() == b"index 20"


def test_files_without_a_marker_or_with_a_damaged_one_are_ignored(store, tmp_path):
    store.write_bytes(f"{FOLDER}/slot-0/files/ckpt.index", b"index 10")
    stored = TrialCheckpoints(store, FOLDER)
    assert stored.latest() is None
    for marker in ("{not json", json.dumps({"state": "complete", "step": "ten"}), "[]"):
        store.write_text(f"{FOLDER}/slot-0/{MARKER}", marker)
        assert stored.latest() is None


def test_restore_writes_the_checkpoint_the_trainer_resumes_and_the_logs(store, tmp_path):
    stored = TrialCheckpoints(store, FOLDER)
    stored.write(20, 1, staged(tmp_path, 20))
    model, logs = tmp_path / "work" / "model", tmp_path / "work" / "logs"
    assert stored.restore(stored.latest(), model, logs)
    assert sorted(p.name for p in model.iterdir()) == [
        "checkpoint",
        "ckpt-20.data-00000-of-00001",
        "ckpt-20.index",
    ]
    assert 'model_checkpoint_path: "ckpt-20"' in (model / "checkpoint").read_text()
    assert (logs / "train" / "events.out.tfevents.1").read_bytes() == b"up to 20"


def test_restore_refuses_files_that_do_not_match_the_marker(store, tmp_path):
    stored = TrialCheckpoints(store, FOLDER)
    stored.write(20, 1, staged(tmp_path, 20))
    store.write_bytes(f"{FOLDER}/slot-0/files/ckpt.index", b"rewritten by another run")
    assert not stored.restore(stored.latest(), tmp_path / "model", tmp_path / "logs")
    assert not (tmp_path / "model" / "checkpoint").exists()


def test_the_uploader_uploads_in_the_background_and_waits_on_close(store, tmp_path):
    stored = TrialCheckpoints(store, FOLDER)
    logs = tmp_path / "logs"
    (logs / "train").mkdir(parents=True)
    (logs / "train" / "events.out.tfevents.1").write_bytes(b"curve")
    uploader = CheckpointUploader(stored, logs, tmp_path / "staging", attempt=3)
    for step in (5, 10):
        uploader(step, fake_checkpoint(tmp_path / "model", step))
    uploader.close()
    assert uploader.uploaded[-1] == 10 and not uploader.failures
    latest = stored.latest()
    assert (latest.step, latest.attempt) == (10, 3)
    assert set(latest.files) == {
        "ckpt.index",
        "ckpt.data-00000-of-00001",
        "logs/train/events.out.tfevents.1",
    }
    assert list((tmp_path / "staging").iterdir()) == []  # staged copies are cleaned up


def test_a_checkpoint_deleted_locally_after_staging_still_uploads(store, tmp_path):
    """The trainer's manager deletes old checkpoints; the staged hard links keep the bytes."""
    stored = TrialCheckpoints(store, FOLDER)
    uploader = CheckpointUploader(stored, tmp_path / "no-logs", tmp_path / "staging", attempt=1)
    prefix = fake_checkpoint(tmp_path / "model", 5)
    uploader(5, prefix)
    for file in (tmp_path / "model").iterdir():
        file.unlink()
    uploader.close()
    assert stored.latest().step == 5


class _Broken(LocalStore):
    def write_bytes(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        raise OSError("the bucket is unreachable")


def test_a_failed_upload_is_reported_and_training_goes_on(tmp_path, caplog):
    stored = TrialCheckpoints(_Broken(tmp_path / "store"), FOLDER)
    uploader = CheckpointUploader(stored, tmp_path / "logs", tmp_path / "staging", attempt=1)
    uploader(5, fake_checkpoint(tmp_path / "model", 5))  # does not raise
    uploader.close()
    assert uploader.uploaded == [] and "the bucket is unreachable" in uploader.failures[0]
    assert "checkpoint upload at step 5 failed" in caplog.text


def test_the_checkpoint_module_stays_free_of_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, kfnas.training.checkpoints, kfnas.stages.search; "
        "sys.exit('tensorflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- settings --------------------------------------------------------------------------------


def test_budget_defaults_checkpoint_every_ten_minutes_with_three_attempts():
    budget = BudgetSpec()
    assert (budget.checkpoint_every_steps, budget.checkpoint_every_minutes) == (0, 10.0)
    assert budget.max_attempts == 3
    assert BudgetSpec(**{"train_steps": 5}) == BudgetSpec(train_steps=5)  # older trial.json


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budget.max_attempts=0", r"budget\.max_attempts must be a positive integer, got 0"),
        (
            "budget.checkpoint_every_steps=-1",
            r"budget\.checkpoint_every_steps must be 0 \(off\) or positive, got -1",
        ),
        (
            "budget.checkpoint_every_minutes=-0.5",
            r"budget\.checkpoint_every_minutes must be 0 \(off\) or positive",
        ),
        (
            "budget.checkpoint_every_steps=101",
            r"checkpoint_every_steps 101 is longer than the training \(budget\.train_steps 100\)",
        ),
        (
            "studies.proxy.budget.checkpoint_every_steps=500",
            r"studies\.proxy\.budget\.checkpoint_every_steps 500 is longer than the training",
        ),
        (
            "budget.lease_timeout_s=30",
            r"budget\.lease_timeout_s 30 is not longer than budget\.lease_renew_s 30: .* set "
            r"lease_timeout_s to at least 3 x lease_renew_s \(90\)",
        ),
        ("budget.lease_renew_s=0", r"budget\.lease_renew_s must be a positive integer, got 0"),
    ],
)
def test_bad_attempt_and_checkpoint_settings_are_refused_before_any_trial(override, message):
    spec = "name: x\ntask: {kind: classification}\nstudies: {proxy: {space: mnasnet}}\n"
    with pytest.raises(SpecError, match=message):
        experiment_spec(spec, [override])


def test_checkpoint_settings_that_fit_are_accepted():
    spec = "name: x\ntask: {kind: classification}\nstudies: {proxy: {space: mnasnet}}\n"
    resolved = experiment_spec(
        spec, ["budget.checkpoint_every_steps=100", "budget.checkpoint_every_minutes=0"]
    )
    assert resolved.study("proxy").budget.checkpoint_every_steps == 100


# -- records ---------------------------------------------------------------------------------


def test_results_count_attempts_and_read_those_written_before():
    old = TrialResult.from_json((GOLDEN / "result_v4.json").read_text())
    assert (old.attempts, old.start_steps) == (0, ())
    new = TrialResult.from_json((GOLDEN / "result.json").read_text())
    assert (new.attempts, new.start_steps) == (2, (0, 1500))
    assert TrialResult.from_json(new.to_json()) == new


def test_attempt_records_round_trip_and_refuse_nonsense():
    attempt = TrialAttempt(attempt=2, host="pod-a", pid=7, started=1.5, from_step=40)
    assert TrialAttempt.from_json(attempt.to_json()) == attempt
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        TrialAttempt(attempt=0, host="pod-a", pid=7, started=1.5)
    with pytest.raises(ValueError, match="must not be negative"):
        TrialResult(1, TrialStatus.FAILED, error="x", start_steps=(-1,))


# -- the best evaluation ---------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize(
    ("values", "best_step"),
    [
        ([math.nan, 0.2, 0.3], 30),
        ([math.nan, 0.4, 0.3], 20),
        ([0.1, math.inf, 0.05], 10),
        ([0.1, -math.inf, math.nan], 10),
        ([math.nan, math.nan], 10),
    ],
)
def test_a_nan_or_infinite_evaluation_never_beats_a_finite_one(values, best_step):
    from kfnas.training.runner import best_evaluation

    evaluations = tuple((10 * (i + 1), {"AP": v, "loss": 1.0}) for i, v in enumerate(values))
    outcome = types.SimpleNamespace(evaluations=evaluations, metrics=evaluations[-1][1])
    best = best_evaluation(outcome, "AP", len(values))
    assert best["eval_step"] == best_step
