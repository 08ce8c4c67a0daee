"""The search controller's scheduling, on a real store, with trials replayed on a virtual clock.

Trials are "run" by ``SimulatedLauncher``: each ends after a given number of virtual seconds and
writes the result a real trial would, so these tests check the controller's own decisions (slots,
proposals, adoption, failures, stop, lease) in milliseconds. The real subprocess launcher runs
in ``tests/launch/test_local_launcher.py`` and end to end in ``tests/e2e``; the Kubernetes one in
``tests/launch/test_kubernetes_launcher.py``.
"""

from __future__ import annotations

import json

import pytest

from kfnas.config.spec import ENV_LATENCY_DEVICE as ENV
from kfnas.config.spec import SpecError
from kfnas.launch import JobState, JobStatus, TrialJob
from kfnas.launch.base import MEASURE_KIND
from kfnas.launch.simulated import SimulatedLauncher, VirtualClock
from kfnas.records.trial import TrialResult, TrialStatus, TrialTraining
from kfnas.stages import StudyStoppedError
from kfnas.stages._common import propose_round
from kfnas.stages._control import (
    LEASE_S,
    ControllerConflictError,
    ControllerState,
    acquire,
    read_state,
    request_stop,
)
from kfnas.stages.controller import latency_device_of, run_search, search_study
from kfnas.store import open_experiment, open_store
from kfnas.store.layout import ExperimentLayout
from kfnas.validation import experiment_spec, trial_pod_problems

SPEC = """
name: controller-test
task: {kind: classification}
studies:
  proxy: {space: mnasnet}
algorithm: {name: random}
budget: {rounds: 2, trials_per_round: 3, max_consecutive_failures: 3}
seed: 3
"""


def _experiment(tmp_path, *overrides):
    """An experiment written as ``init_experiment`` writes it (no data check: nothing trains)."""
    spec = experiment_spec(SPEC, [f"store_root={tmp_path}", *overrides])
    open_store(str(tmp_path)).write_text(
        ExperimentLayout(spec.name).experiment_json(), spec.to_json()
    )
    return open_experiment(f"{tmp_path}/{spec.name}")


def _launcher(exp, clock, durations=None, fail=()):
    """A launcher whose trials take ``durations[id]`` seconds (default 100 + 10 x id).

    Trials in ``fail`` are OOM-killed without a result; the others complete with reward id / 100.
    """

    def duration(job):
        return (durations or {}).get(job.trial_id, 100.0 + 10 * job.trial_id)

    def finish(job):
        if job.trial_id in fail:
            return JobStatus(JobState.FAILED, "out of memory (OOMKilled, exit 137)", True)
        exp.records.write_result(
            job.study,
            TrialResult(
                job.trial_id, TrialStatus.COMPLETED, {"top1": 0.5}, reward=job.trial_id / 100
            ),
        )
        return None

    return SimulatedLauncher(clock, duration, finish)


def _run(exp, launcher, clock, parallelism=2, run_id="run-1", lines=None):
    log = lines.append if lines is not None else lambda line: None
    return run_search(
        exp,
        "proxy",
        launcher,
        parallelism=parallelism,
        run_id=run_id,
        clock=clock,
        poll_s=1.0,
        log=log,
    )


def test_slots_stay_busy_until_the_budget_is_spent(tmp_path):
    exp, clock = _experiment(tmp_path), VirtualClock()
    launcher = _launcher(exp, clock)
    busy = []
    original = launcher.poll

    def poll(names):
        names = list(names)
        busy.append(len(names))
        return original(names)

    launcher.poll = poll
    lines = []
    state = _run(exp, launcher, clock, parallelism=3, lines=lines)
    history = exp.records.history("proxy")
    assert len(history) == 6 and all(result.completed for _, result in history)
    assert (state.state, state.completed, state.failed, state.proposed) == ("finished", 6, 0, 6)
    assert max(busy) == 3  # never more than the slots
    # The first proposal fills every slot and proposes one trial ahead; later proposals refill
    # the trials ahead while every slot is busy, so a freed slot starts one at once.
    rounds = [spec.round for spec, _ in history]
    assert rounds[:4] == [1, 1, 1, 1] and rounds == sorted(rounds) and rounds[-1] > 1
    assert state.utilization > 0.9
    assert sum("proxy trial" in line and "COMPLETED" in line for line in lines) == 6
    stored = read_state(exp, "proxy")
    assert stored.state == "finished" and stored.running == {}
    launch = json.loads(exp.store.read_text(exp.layout.trial_launch("proxy", 1)))
    assert launch == {"launcher": "simulated", "job": launcher.starts[0]}


def test_a_killed_trial_is_retried_until_its_attempts_are_spent_and_the_search_goes_on(tmp_path):
    exp, clock = _experiment(tmp_path, "budget.max_attempts=2"), VirtualClock()
    launcher = _launcher(exp, clock, fail={2})
    state = _run(exp, launcher, clock)
    failed = exp.records.read_result("proxy", 2)
    assert failed.status is TrialStatus.FAILED
    assert failed.error == "its job failed: out of memory (OOMKilled, exit 137)"
    assert launcher.starts.count(TrialJob(exp.uri, "proxy", 2).name) == 2
    assert (state.completed, state.failed) == (5, 1)


class SelfRetrying(SimulatedLauncher):
    """Jobs that retry themselves, as Kubernetes Jobs do: FAILED means no retry is left."""

    RETRIES_ITSELF = True


def test_a_job_that_retries_itself_is_failed_at_its_first_failure(tmp_path):
    exp, clock = _experiment(tmp_path), VirtualClock()
    simulated = _launcher(exp, clock, fail={2})
    launcher = SelfRetrying(clock, simulated.duration, simulated.finish)
    state = _run(exp, launcher, clock)
    assert launcher.starts.count(TrialJob(exp.uri, "proxy", 2).name) == 1
    assert (state.completed, state.failed) == (5, 1)


def test_too_many_failures_in_a_row_stop_the_study_after_the_running_trials(tmp_path):
    exp = _experiment(tmp_path, "budget.rounds=10", "budget.max_attempts=1")
    clock = VirtualClock()
    launcher = _launcher(exp, clock, fail=set(range(1, 31)))
    with pytest.raises(StudyStoppedError, match="its last 3 trials all failed"):
        _run(exp, launcher, clock)
    results = {spec.trial_id: result for spec, result in exp.records.history("proxy")}
    started = {job.trial_id for job, _ in launcher.jobs.values()}
    assert all(results[i] is not None for i in started)  # drained: nothing left running
    assert len(results) < 30  # it stopped proposing
    assert read_state(exp, "proxy").state == "failed"


def test_a_restarted_controller_adopts_running_trials_and_starts_unstarted_ones(tmp_path):
    exp, clock = (
        _experiment(tmp_path, "budget.rounds=1", "budget.trials_per_round=3"),
        VirtualClock(),
    )
    launcher = _launcher(exp, clock)
    # A controller that died: trial 1 launched and still running, trials 2 and 3 proposed only.

    assert propose_round(exp, "proxy", 1, n=3) == [1, 2, 3]
    launcher.start(TrialJob(exp.uri, "proxy", 1))
    state = _run(exp, launcher, clock, run_id="run-1")
    assert state.completed == 3 and state.proposed == 3
    names = [TrialJob(exp.uri, "proxy", i).name for i in (1, 2, 3)]
    assert launcher.starts == [names[0], *names]  # trial 1 adopted (not run twice), 2 and 3 started
    assert len(launcher.jobs) == 3


def test_stop_request_lets_running_trials_finish_and_launches_no_more(tmp_path):
    exp, clock = _experiment(tmp_path), VirtualClock()
    launcher = _launcher(exp, clock)
    original = launcher.poll

    def poll(names):
        out = original(names)
        if exp.records.read_result("proxy", 1) is not None:
            request_stop(exp, "proxy")
        return out

    launcher.poll = poll
    state = _run(exp, launcher, clock)
    assert state.state == "finished" and state.reason == "stopped by request (kfnas stop)"
    # Trials 1 and 2 ran; trial 3, proposed ahead while both slots were busy, was not started
    # (a later run of the experiment starts it).
    assert state.proposed == 3
    assert [result is not None for _, result in exp.records.history("proxy")] == [True, True, False]
    assert len(launcher.jobs) == 2


def test_a_second_controller_is_refused_naming_the_first_run(tmp_path):
    exp, clock = _experiment(tmp_path), VirtualClock()
    launcher = _launcher(exp, clock)
    original = launcher.poll
    refusals = []

    def poll(names):
        if not refusals:
            with pytest.raises(ControllerConflictError, match="being searched by run 'run-1'") as e:
                _run(exp, _launcher(exp, clock), clock, run_id="run-2")
            refusals.append(e.value)
        return original(names)

    launcher.poll = poll
    _run(exp, launcher, clock, run_id="run-1")
    assert "kfnas stop" in str(refusals[0])


def test_the_same_run_or_a_dead_one_gives_the_study_back(tmp_path):
    exp, clock = (
        _experiment(tmp_path, "budget.rounds=1", "budget.trials_per_round=2"),
        VirtualClock(),
    )
    acquire(exp, ControllerState("run-1", "proxy"), clock.time())
    _run(exp, _launcher(exp, clock), clock, run_id="run-1")  # a retried step of the same run
    acquire(exp, ControllerState("run-1", "proxy", state="running"), clock.time())
    clock.sleep(LEASE_S + 1)  # its heartbeat lapsed: the pod died
    state = _run(exp, _launcher(exp, clock), clock, run_id="run-2")
    assert state.state == "finished"


def test_bad_parallelism_and_absent_studies(tmp_path):
    exp = _experiment(tmp_path)
    with pytest.raises(ValueError, match="parallelism must be at least 1 trial at a time, got 0"):
        search_study(exp.uri, "proxy", 0, {"kind": "local"})
    skipped = search_study(exp.uri, "scaling", 2, {"kind": "local"})
    assert (skipped.state, skipped.proposed) == ("finished", 0)


def test_the_in_process_study_runner_finishes_a_controllers_rounds_up_to_the_budget(
    tmp_path, monkeypatch
):
    """``kfnas search`` resumes what a controller proposed (rounds as large as its free slots)."""
    from kfnas.cli import local_study

    exp = _experiment(tmp_path)
    for round_index, n in ((1, 3), (2, 1), (3, 1)):  # the controller's rounds: 5 trials proposed
        propose_round(exp, "proxy", round_index, n=n)
    trained = []

    def run_trial(uri, study, trial_id):
        done = exp.records.read_result(study, trial_id)
        if done is None:
            trained.append(trial_id)
            done = TrialResult(trial_id, TrialStatus.COMPLETED, {"top1": 0.5}, reward=trial_id)
            exp.records.write_result(study, done)
        return done

    monkeypatch.setattr(local_study, "run_trial", run_trial)
    seen = []
    run = local_study.run_study(exp.uri, "proxy", progress=lambda r, i, _: seen.append((r, i)))
    assert run.trial_ids == trained == [1, 2, 3, 4, 5, 6]  # the budget: 2 rounds x 3
    assert seen == [(1, 1), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
    assert run.top == [6]
    again = local_study.run_study(exp.uri, "proxy")
    assert again.trial_ids == [1, 2, 3, 4, 5, 6] and trained == [1, 2, 3, 4, 5, 6]


def _measuring_launcher(exp, clock, measure_s=30.0, broken=()):
    """Trial jobs write ``trained.json``; measurement jobs (``-m``) write the result.

    A measurement of a trial in ``broken`` dies without a result.
    """

    def duration(job):
        return measure_s if job.kind == MEASURE_KIND else 100.0 + 10 * job.trial_id

    def finish(job):
        if job.kind != MEASURE_KIND:
            exp.records.write_trained(job.study, TrialTraining(job.trial_id, {"top1": 0.5}))
            return None
        if job.trial_id in broken:
            return JobStatus(JobState.FAILED, "exit code 1")
        assert exp.records.read_trained(job.study, job.trial_id) is not None
        exp.records.write_result(
            job.study,
            TrialResult(
                job.trial_id,
                TrialStatus.COMPLETED,
                {"top1": 0.5, "latency_ms": 3.0},
                reward=job.trial_id / 100,
            ),
        )
        return None

    return SimulatedLauncher(clock, duration, finish)


def test_trained_trials_are_measured_one_at_a_time_outside_the_trial_slots(tmp_path):
    exp, clock = _experiment(tmp_path), VirtualClock()
    launcher = _measuring_launcher(exp, clock, measure_s=80.0, broken={4})
    polled, unmeasured_at_proposal = [], []
    original_poll, original_start = launcher.poll, launcher.start

    def poll(names):
        names = list(names)
        polled.append(names)
        return original_poll(names)

    def start(job):
        if job.kind != MEASURE_KIND and job.trial_id > 2:  # a later proposal: what it saw
            history = exp.records.history("proxy")
            trained = [
                s.trial_id for s, r in history if exp.records.read_trained("proxy", s.trial_id)
            ]
            unmeasured_at_proposal.append(
                [i for i in trained if exp.records.read_result("proxy", i) is None]
            )
        return original_start(job)

    launcher.poll, launcher.start = poll, start
    lines = []
    state = _run(exp, launcher, clock, parallelism=2, lines=lines)
    measurements = [[n for n in names if n.endswith("-m")] for names in polled]
    assert max(len(m) for m in measurements) == 1  # one model at a time
    trials = [[n for n in names if not n.endswith("-m")] for names in polled]
    assert max(len(t) for t in trials) == 2  # measuring holds no trial slot
    history = exp.records.history("proxy")
    assert len(history) == 6 and all(result is not None for _, result in history)
    broken = exp.records.read_result("proxy", 4)
    assert broken.status is TrialStatus.FAILED
    assert broken.error == "its measurement job failed: exit code 1"
    assert (state.completed, state.failed) == (5, 1)
    assert all(r.metrics["latency_ms"] == 3.0 for _, r in history if r.completed)
    assert any("latency 3.00 ms" in line for line in lines)
    # Trials trained but not yet measured had no result when later trials were proposed.
    assert any(unmeasured for unmeasured in unmeasured_at_proposal)


def test_a_restarted_controller_measures_a_trained_trial_without_training_it_again(tmp_path):
    exp, clock = (
        _experiment(tmp_path, "budget.rounds=1", "budget.trials_per_round=2"),
        VirtualClock(),
    )
    ids = propose_round(exp, "proxy", 1, n=2)
    exp.records.write_trained("proxy", TrialTraining(ids[0], {"top1": 0.4}))
    launcher = _measuring_launcher(exp, clock)
    state = _run(exp, launcher, clock)
    assert TrialJob(exp.uri, "proxy", ids[0]).name not in launcher.starts
    assert TrialJob(exp.uri, "proxy", ids[0], kind=MEASURE_KIND).name in launcher.starts
    assert (state.completed, state.failed) == (2, 0)


def test_trial_pods_a_single_process_framework_would_leave_idle_are_refused(tmp_path):
    torch_task = [
        "task.kind=segmentation_3d",
        "task.image_size=16",
        "task.options={}",
        "objectives.metric=",
        "studies.proxy.space=unet_encoder",
    ]
    exp = _experiment(tmp_path, *torch_task)
    four_gpus = {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 4}
    kubernetes = {"kind": "kubernetes", "settings": {"training": four_gpus}}
    with pytest.raises(SpecError) as refused:
        search_study(exp.uri, "proxy", 2, kubernetes, "run-1")
    assert (
        "task.kind 'segmentation_3d' trains each trial with pytorch in one process on one device, "
        "but the cluster profile's steps.training gives a trial 1 pod(s) with 4 nvidia.com/gpu "
        "each: all but one would idle. Set steps.training.accelerator.count to 1"
    ) in str(refused.value)
    assert exp.records.history("proxy") == []
    one_gpu_two_pods = {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 1, "workers": 2}
    two_pods = {"trial": one_gpu_two_pods}
    assert "steps.trial gives a trial 2 pod(s) with 1 nvidia.com/gpu" in " ".join(
        trial_pod_problems(exp.spec, two_pods)
    )
    one_gpu = {job: {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 1}
               for job in ("trial", "training")}  # fmt: skip
    assert trial_pod_problems(exp.spec, one_gpu) == []
    tensorflow = experiment_spec(SPEC, [f"store_root={tmp_path}"])
    assert trial_pod_problems(tensorflow, {"training": four_gpus}) == []  # trains across them


def test_a_latency_device_no_profile_of_the_run_defines_is_refused_before_any_trial(tmp_path):
    exp = _experiment(tmp_path, "measurement.device=pixel-7")
    with pytest.raises(SpecError, match=r"measurement\.device is 'pixel-7' but this run measures"):
        search_study(exp.uri, "proxy", 2, {"kind": "local"}, "run-1")
    assert exp.records.history("proxy") == []
    kubernetes = {"kind": "kubernetes", "settings": {"latency": {"env": {ENV: "pixel-7"}}}}
    assert latency_device_of(kubernetes) == "pixel-7"
    assert latency_device_of({"kind": "local"}) == "local"
