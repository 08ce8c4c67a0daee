"""Fault injection through the search controller: real trial processes, killed, started again.

The controller (``run_search``) runs a real study with the real local launcher; each trial is a real
``kfnas.stages.worker`` process training the shared fixtures' smallest classification model (killing
and resuming do not depend on the task kind). Trial jobs SIGKILL themselves right after uploading a
checkpoint (what an OOM kill or a preemption does to a pod): trial 1 on its first two attempts, so
the controller starts it again and it resumes from its checkpoint and completes on its third; trial
2 on every attempt (an architecture that never fits), so it is FAILED once its attempts are spent,
and the study still spends its whole budget: a third trial is proposed and completes.
"""

from __future__ import annotations

import sys

import pytest
from shared_fixtures import CLASSIFICATION_SPEC, data_overrides

from kfnas import stages
from kfnas.launch import TrialJob
from kfnas.launch.local import LocalLauncher
from kfnas.records.trial import TrialStatus
from kfnas.stages.controller import run_search
from kfnas.store import open_experiment

STEPS, EVERY = 20, 5
KILLED_TWICE, KILLED_ALWAYS = 1, 2

# A trial job that SIGKILLs itself right after a checkpoint upload: trial KILLED_TWICE on its
# first two attempts, trial KILLED_ALWAYS on every attempt.
KILLER = f"""
import os, signal, sys
from kfnas.training import checkpoints
trial_id = int(sys.argv[3])
write = checkpoints.TrialCheckpoints.write
def write_then_die(self, step, attempt, staged):
    stored = write(self, step, attempt, staged)
    if trial_id == {KILLED_ALWAYS} or (trial_id == {KILLED_TWICE} and attempt < 3):
        os.kill(os.getpid(), signal.SIGKILL)
    return stored
checkpoints.TrialCheckpoints.write = write_then_die
from kfnas.stages.worker import main
sys.exit(main(sys.argv[1:]))
"""


class KilledTwiceLauncher(LocalLauncher):
    """The local launcher, with the trial job above instead of the plain worker."""

    def command(self, job: TrialJob) -> list[str]:
        return [sys.executable, "-c", KILLER, *job.worker_args()[2:]]


@pytest.mark.tf
@pytest.mark.slow
def test_killed_trials_resume_or_fail_after_their_attempts_and_the_budget_is_spent(
    tmp_path, classification_data
):
    uri = stages.init_experiment(
        CLASSIFICATION_SPEC,
        [
            f"store_root={tmp_path / 'store'}",
            *data_overrides(classification_data),
            "studies.proxy.budget.rounds=1",
            "studies.proxy.budget.trials_per_round=3",
            f"studies.proxy.budget.train_steps={STEPS}",
            f"studies.proxy.budget.checkpoint_every_steps={EVERY}",
            "studies.proxy.budget.max_attempts=3",
        ],
    )
    exp = open_experiment(uri)
    launcher = KilledTwiceLauncher(str(tmp_path / "logs"), threads_per_trial=1)
    lines: list[str] = []
    state = run_search(
        exp, "proxy", launcher, parallelism=2, run_id="faults", poll_s=1.0, log=lines.append
    )
    assert (state.proposed, state.completed, state.failed) == (3, 2, 1), lines

    resumed = exp.records.read_result("proxy", KILLED_TWICE)
    assert resumed.status is TrialStatus.COMPLETED, resumed.error
    assert resumed.attempts == 3
    assert resumed.start_steps[0] == 0 and all(s >= EVERY for s in resumed.start_steps[1:])
    restarts = [line for line in lines if "starting it again" in line]
    assert sum(f"proxy trial {KILLED_TWICE}: killed" in line for line in restarts) == 2, lines

    failed = exp.records.read_result("proxy", KILLED_ALWAYS)
    assert failed.status is TrialStatus.FAILED
    assert failed.error.startswith("killed 3 times at steps"), failed.error
    assert sum(f"proxy trial {KILLED_ALWAYS}: killed" in line for line in restarts) == 2, lines

    other = exp.records.read_result("proxy", 3)  # proposed for the slot the failure freed
    assert other.completed and other.attempts == 1
