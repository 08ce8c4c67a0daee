"""Fault injection through the search controller: real trial processes, killed, started again.

The controller (``run_search``) runs a real study with the real local launcher; each trial is a
real ``kfnas.stages.worker`` process training the shared fixtures' smallest detection model. The
trial job of trial 1 SIGKILLs itself right after uploading its first checkpoint on its first two
attempts (what an OOM kill or a preemption does to a pod): the controller starts it again, it
resumes from its checkpoint and completes on its third attempt, while the other trial trains in
the second slot and the study spends its whole budget.
"""

from __future__ import annotations

import sys

import pytest
from shared_fixtures import DETECTION_SPEC, data_overrides

from kfnas import stages
from kfnas.launch import TrialJob
from kfnas.launch.local import LocalLauncher
from kfnas.records.trial import TrialStatus
from kfnas.stages.controller import run_search
from kfnas.store import open_experiment

STEPS, EVERY = 20, 5

# Trial 1's job: SIGKILL right after its first checkpoint upload, on its first two attempts.
KILLED_TWICE = """
import os, signal, sys
from kfnas.stages.search import read_attempts
from kfnas.store import open_experiment
from kfnas.training import checkpoints
uri, study, trial_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
write = checkpoints.TrialCheckpoints.write
def write_then_die(self, *args, **kwargs):
    write(self, *args, **kwargs)
    if trial_id == 1 and len(read_attempts(open_experiment(uri), study, trial_id)) < 3:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoints.TrialCheckpoints.write = write_then_die
from kfnas.stages.worker import main
sys.exit(main(sys.argv[1:]))
"""


class KilledTwiceLauncher(LocalLauncher):
    """The local launcher, with the trial job above instead of the plain worker."""

    def command(self, job: TrialJob) -> list[str]:
        return [sys.executable, "-c", KILLED_TWICE, *job.worker_args()[2:]]


@pytest.mark.tf
@pytest.mark.slow
def test_a_trial_killed_twice_resumes_and_completes_while_the_search_goes_on(
    tmp_path, detection_data
):
    uri = stages.init_experiment(
        DETECTION_SPEC,
        [
            f"store_root={tmp_path / 'store'}",
            *data_overrides(detection_data),
            "studies.proxy.budget.trials_per_round=2",
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
    assert (state.proposed, state.completed, state.failed) == (2, 2, 0), lines
    killed = exp.records.read_result("proxy", 1)
    assert killed.status is TrialStatus.COMPLETED, killed.error
    assert killed.attempts == 3
    assert killed.start_steps[0] == 0 and all(s >= EVERY for s in killed.start_steps[1:])
    assert (
        sum("proxy trial 1: killed" in line and "starting it again" in line for line in lines) == 2
    )
    other = exp.records.read_result("proxy", 2)
    assert other.completed and other.attempts == 1
