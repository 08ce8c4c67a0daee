"""Fault injection: trial processes SIGKILLed mid-training resume from their last checkpoint.

Real processes on a real store: each trial runs as its job does (``python -m kfnas.stages.worker
<uri> <study> <id>``), the smallest classification settings the shared fixtures train (resuming does
not depend on the task kind), and is killed with SIGKILL by the test once a checkpoint marker is in
the store. The attempt bookkeeping (numbering, exhaustion, the FAILED reason, ``run_trial`` refusing
a trial whose attempts are spent) is checked without TensorFlow at the end; a trial killed on every
attempt through the search controller, in ``test_controller_faults.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shared_fixtures import CLASSIFICATION_SPEC, data_overrides

from kfnas import stages
from kfnas.records.trial import TrialAttempt, TrialResult, TrialStatus
from kfnas.stages.search import attempts_exhausted, read_attempts, record_attempt
from kfnas.store import open_experiment, open_store
from kfnas.store.layout import ExperimentLayout
from kfnas.training.checkpoints import MARKER, SLOTS, TrialCheckpoints
from kfnas.validation import experiment_spec

STEPS, EVERY = 40, 5


def _experiment(root: Path, data, *overrides: str) -> tuple[str, int]:
    uri = stages.init_experiment(
        CLASSIFICATION_SPEC,
        [
            f"store_root={root}",
            *data_overrides(data),
            f"studies.proxy.budget.train_steps={STEPS}",
            f"studies.proxy.budget.checkpoint_every_steps={EVERY}",
            *overrides,
        ],
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    return uri, trial_id


def _worker(uri: str, trial_id: int, code: str | None = None) -> subprocess.Popen:
    command = ["-c", code] if code else ["-m", "kfnas.stages.worker"]
    return subprocess.Popen(
        [sys.executable, *command, uri, "proxy", str(trial_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _complete_marker(exp, trial_id: int) -> bool:
    folder = exp.layout.trial_checkpoints_dir("proxy", trial_id)
    for slot in SLOTS:
        path = f"{folder}/{slot}/{MARKER}"
        if exp.store.exists(path) and '"complete"' in exp.store.read_text(path):
            return True
    return False


def _optimizer_steps(exp, trial_id: int) -> tuple[int, int]:
    """The stored final model's (global step, optimizer iterations)."""
    import tensorflow as tf

    model = exp.store.uri(exp.layout.trial_model_dir("proxy", trial_id))
    latest = tf.train.latest_checkpoint(model)
    return (
        int(tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE")),
        int(tf.train.load_variable(latest, "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")),
    )


@pytest.mark.tf
@pytest.mark.slow
def test_a_killed_trial_resumes_from_its_checkpoint_and_trains_the_same_steps(
    tmp_path, classification_data
):
    uri, trial_id = _experiment(tmp_path / "store", classification_data)
    exp = open_experiment(uri)
    job = _worker(uri, trial_id)
    deadline = time.monotonic() + 600
    while not _complete_marker(exp, trial_id):
        assert job.poll() is None, f"the trial ended before any checkpoint:\n{job.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint marker within 10 minutes"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    assert exp.records.read_result("proxy", trial_id) is None
    killed_at = TrialCheckpoints(exp.store, exp.layout.trial_checkpoints_dir("proxy", trial_id))
    resume_step = killed_at.latest().step
    assert 0 < resume_step < STEPS and resume_step % EVERY == 0

    rerun = _worker(uri, trial_id)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    result = exp.records.read_result("proxy", trial_id)
    assert result.status is TrialStatus.COMPLETED, result.error
    assert result.attempts == 2
    assert result.start_steps == (0, resume_step)
    assert _optimizer_steps(exp, trial_id) == (STEPS, STEPS)

    # An uninterrupted run of the same trial takes exactly as many optimizer steps.
    uri_2, trial_2 = _experiment(tmp_path / "uninterrupted", classification_data)
    whole = stages.run_trial(uri_2, "proxy", trial_2)
    assert whole.completed and (whole.attempts, whole.start_steps) == (1, (0,))
    assert _optimizer_steps(open_experiment(uri_2), trial_2) == (STEPS, STEPS)
    # The TensorBoard curve goes on from the first attempt's points.
    logs = Path(exp.store.uri(exp.layout.trial_logs_dir("proxy", trial_id))) / "train"
    assert len(list(logs.glob("events.out.tfevents.*"))) == 2


# -- attempt bookkeeping, without training ---------------------------------------------------

SPEC = """
name: attempts
task: {kind: classification}
studies: {proxy: {space: mnasnet}}
budget: {max_attempts: 3}
"""


@pytest.fixture
def exp(tmp_path):
    spec = experiment_spec(SPEC, [f"store_root={tmp_path}"])
    open_store(str(tmp_path)).write_text(
        ExperimentLayout(spec.name).experiment_json(), spec.to_json()
    )
    exp = open_experiment(f"{tmp_path}/{spec.name}")
    assert stages.propose_trials(exp.uri, "proxy", 1) == [1, 2, 3]
    return exp


def test_attempts_take_the_next_free_number(exp, monkeypatch):
    monkeypatch.setenv("HOSTNAME", "pod-a")
    assert record_attempt(exp, "proxy", 2, from_step=0) == 1
    # Another runner took number 2 between our listing and our write: we get 3.
    exp.store.write_text(
        exp.layout.trial_attempt("proxy", 2, 2),
        TrialAttempt(attempt=2, host="pod-b", pid=1, started=1.0).to_json(),
    )
    assert record_attempt(exp, "proxy", 2, from_step=15) == 3
    attempts = read_attempts(exp, "proxy", 2)
    assert list(attempts) == [1, 2, 3]
    assert (attempts[1].host, attempts[1].pid) == ("pod-a", os.getpid())
    assert attempts[3].from_step == 15


def test_attempts_left_or_a_result_means_nothing_is_recorded(exp):
    record_attempt(exp, "proxy", 2, from_step=0)
    record_attempt(exp, "proxy", 2, from_step=10)
    assert attempts_exhausted(exp, "proxy", 2) is None  # 2 of 3
    record_attempt(exp, "proxy", 3, from_step=0)
    done = TrialResult(3, TrialStatus.FAILED, error="diverged")
    exp.records.write_result("proxy", done)
    for _ in range(2):
        record_attempt(exp, "proxy", 3, from_step=0)
    assert attempts_exhausted(exp, "proxy", 3) is None
    assert exp.records.read_result("proxy", 3) == done


def test_exhausted_attempts_are_failed_with_where_and_when(exp, tmp_path):
    for from_step in (0, 100, 300):
        record_attempt(exp, "proxy", 2, from_step=from_step)
    # The third attempt got to a checkpoint at step 400 before it was killed too.
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "ckpt.index").write_bytes(b"i")
    stored = TrialCheckpoints(exp.store, exp.layout.trial_checkpoints_dir("proxy", 2))
    checkpoint = stored.write(400, 3, staged)
    # An unreadable attempt record still counts.
    exp.store.write_text(exp.layout.trial_attempt("proxy", 2, 4), "{truncated")
    failed = attempts_exhausted(exp, "proxy", 2)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(checkpoint.time))
    assert failed.error == (
        f"killed 4 times at steps [100, 300, 400, 400], last seen {stamp}; raise "
        f"budget.max_attempts or look at the pod logs"
    )
    assert (failed.attempts, failed.start_steps) == (4, (0, 100, 300, 0))
    assert exp.records.read_result("proxy", 2) == failed
    assert attempts_exhausted(exp, "proxy", 2) is None  # recorded once
    # run_trial records it too, before anything trains, and counts no attempt for it.
    for from_step in (0, 0, 0):
        record_attempt(exp, "proxy", 1, from_step=from_step)
    refused = stages.run_trial(exp.uri, "proxy", 1)
    assert refused.status is TrialStatus.FAILED and refused.attempts == 3
    assert refused.error.startswith("killed 3 times at steps [0, 0, 0], last seen ")
    assert exp.store.list(exp.layout.trial_attempts_dir("proxy", 1)) == [
        "001.json",
        "002.json",
        "003.json",
    ]
