"""The search controller: one step that keeps ``parallelism`` trial slots busy until the budget.

``search_study(uri, study, parallelism, launch_config, run_id)`` is the stage the search
pipeline runs for each searched study (``proxy``, ``scaling``, ``augmentation``). It replaces the
rounds unrolled into the DAG: the compiled pipeline no longer grows with rounds or trials, and no
slot waits for a round's slowest trial. Each poll it:

1. asks the launcher how its running jobs stand and records each finished one (a job that died
   without ``result.json``, e.g. OOM-killed or past its deadline, is recorded FAILED with the
   launcher's reason, so one bad architecture never stops the search);
2. fills every free slot with *one* proposal of as many trials (a new round: rounds stay the unit
   of proposal bookkeeping, each proposal rebuilding the algorithm from the study's search
   snapshot and the trials since it through the stateless ``kfnas.search`` controller), writes
   their ``trial.json`` and starts their jobs;
   the same proposal keeps a few trials proposed ahead, which freed slots start at once
   (``_fill``), so a slot does not wait for a proposal;
3. sends each trial whose training ended well (``trained.json``) to a measurement job on the
   latency device (job kind ``latency``: ``kfnas.stages.measure_worker``), one at a time, in the
   order they finished; the measurement writes the trial's ``result.json`` with its latency and
   reward, so the algorithm sees a reward only once it exists;
4. writes ``controller.json`` (its heartbeat and status; see ``_control``).

With multi-fidelity (``studies.<s>.multi_fidelity.scheduler: asha``), a free slot first goes to
an ASHA promotion (``_promote``: the best unpromoted trial of the highest rung that has one
continues from its checkpoint to the next rung's steps), and only then to a new architecture,
which starts at rung 0; nothing waits for a rung to fill.

The study's budget is ``budget.rounds x budget.trials_per_round`` trials (new architectures; ASHA's
promotions come on top). The store stays the
single source of truth: a restarted controller (a retried step, a resubmitted run) adopts the jobs
of trials without a result (jobs have deterministic names) and starts those that never started.
It stops launching when the budget is spent, the space is exhausted, ``kfnas stop`` asks, or
``max_consecutive_failures`` trials in a row failed; it then waits for the running trials (the
drain) and returns, or raises ``StudyStoppedError`` for the failures.

Bounds: one ``trial.json`` per trial and one ``controller.json`` per study in the store; at most
one launcher poll and one proposal per wake-up, and a wake-up at least every ``poll_s`` (sooner
when the launcher sees a job end: local processes); a freed slot idles at most ``poll_s`` plus one
proposal (``benchmarks/slot_utilization.py`` measures both).

To change the scheduling: edit ``_Controller``; to run trials elsewhere, add a launcher
(``kfnas.launch``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kfnas.config.spec import ENV_LATENCY_DEVICE, LOCAL_DEVICE, SpecError
from kfnas.config.studies import PROXY
from kfnas.launch import JobState, JobStatus, Launcher, TrialJob, launcher_from_config
from kfnas.launch.base import MEASURE_KIND
from kfnas.records.trial import TrialResult, TrialStatus, TrialTraining
from kfnas.search import SpaceExhausted
from kfnas.stages._common import (
    StudyStoppedError,
    check_failures,
    halving_schedule,
    promote_trials,
    propose_round,
)
from kfnas.stages._control import ControllerState, acquire, stop_requested, write_state
from kfnas.stages.search import attempts_exhausted
from kfnas.store import Experiment, open_experiment
from kfnas.store.trials import TrialAlreadyFinished
from kfnas.validation import latency_device_problems, trial_pod_problems


class Clock(Protocol):
    """Time as the controller sees it (the benchmark replays trials on a virtual one)."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Waits ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``."""
        time.sleep(seconds)


def record_job_end(
    exp: Experiment, study: str, trial_id: int, status: JobStatus, *, measuring: bool = False
) -> TrialResult | TrialTraining:
    """The result of a trial whose job ended; one that ended without it is recorded FAILED.

    A training job that ended with the trial trained (``trained.json``) returns that record: the
    trial waits for its measurement. The error names why, with the launcher's reason (``out of
    memory (OOMKilled, exit 137)``, the deadline, an exit code), so one job that died never leaves
    its trial without a result.

    Args:
        exp: The experiment.
        study: The trial's study.
        trial_id: The trial.
        status: How its job ended.
        measuring: The job was the trial's measurement (it must have written ``result.json``).
    """
    records = exp.records
    result = records.read_result(study, trial_id)
    if result is not None:
        return result
    if not measuring and (trained := records.read_trained(study, trial_id)) is not None:
        return trained
    job = "measurement job" if measuring else "job"
    why = {
        JobState.SUCCEEDED: f"its {job} ended without writing result.json",
        JobState.MISSING: f"its {job} disappeared (deleted from outside kfnas?)",
    }.get(status.state, f"its {job} failed")
    result = TrialResult(
        trial_id=trial_id,
        status=TrialStatus.FAILED,
        error=f"{why}: {status.reason}" if status.reason else why,
    )
    try:
        records.write_result(study, result)
    except TrialAlreadyFinished:  # It wrote its result just now.
        return records.read_result(study, trial_id) or result
    return result


def job_kind(study: str) -> str:
    """The profile section a study's trials run with: ``trial`` for the proxy study."""
    return "trial" if study == PROXY else "training"


def search_study(
    experiment_uri: str,
    study: str,
    parallelism: int,
    launch_config: Mapping[str, Any],
    run_id: str = "",
    *,
    poll_s: float = 5.0,
    log: Callable[[str], None] = print,
) -> ControllerState:
    """Searches ``study`` with ``parallelism`` slots until its budget is spent (see module doc).

    Args:
        experiment_uri: From ``init_experiment``.
        study: A searched study (``proxy``, ``scaling``, ``augmentation``); a study the experiment
            does not have (a refinement the run switched off) returns at once.
        parallelism: Trials that run at once (at least 1).
        launch_config: Which launcher runs the trials and how (``kfnas.launch``).
        run_id: The run this controller belongs to (its lease; ``kfnas stop`` targets it).
        poll_s: Seconds between polls of the launcher.
        log: Receives one line per finished trial and per decision.

    Returns:
        The controller's final state (counts, utilization, proposal time).

    Raises:
        ValueError: ``parallelism`` below 1.
        LaunchError: The launcher cannot start trials (RBAC, secrets, settings), before any trial.
        SpecError: The spec's ``measurement.device`` is not the device this run measures on,
            before any trial.
        ControllerConflictError: Another run's controller is searching the study.
        StudyStoppedError: The last ``max_consecutive_failures`` trials all failed.
    """
    if parallelism < 1:
        raise ValueError(
            f"parallelism must be at least 1 trial at a time, got {parallelism}: set the "
            f"pipeline parameter parallelism (or --parallelism) to the trials to run at once"
        )
    exp = open_experiment(experiment_uri)
    if study not in exp.spec.studies:
        return ControllerState(run_id=run_id, study=study, state="finished", reason="no study")
    return search_with_config(exp, study, parallelism, launch_config, run_id, poll_s, log)


def search_with_config(
    exp: Experiment,
    study: str,
    parallelism: int,
    launch_config: Mapping[str, Any],
    run_id: str,
    poll_s: float = 5.0,
    log: Callable[[str], None] = print,
) -> ControllerState:
    """``search_study`` on an opened experiment: what a stage that searches in a loop calls.

    The latency device and the trial pods (``trial_pod_problems``) are checked, the launcher
    built from ``launch_config`` and closed after.
    """
    problems = latency_device_problems(exp.spec, latency_device_of(launch_config))
    problems += trial_pod_problems(exp.spec, launch_config.get("settings", {}))
    if problems:
        raise SpecError("; ".join(problems))
    launcher = launcher_from_config({**launch_config, "run_id": run_id})
    try:
        return run_search(
            exp, study, launcher, parallelism=parallelism, run_id=run_id, poll_s=poll_s, log=log
        )
    finally:
        launcher.close()


def latency_device_of(launch_config: Mapping[str, Any]) -> str:
    """The latency device a launch config's measurement jobs run on.

    ``local`` for the local launcher; for the kubernetes launcher, the ``KFNAS_LATENCY_DEVICE`` its
    ``latency`` settings set (the cluster profile's ``latency.device``).
    """
    settings = launch_config.get("settings", {}).get(MEASURE_KIND, {})
    return settings.get("env", {}).get(ENV_LATENCY_DEVICE, "") or LOCAL_DEVICE


def search_summary(experiment_uri: str, state: ControllerState) -> dict[str, float]:
    """The numbers the search step shows in the KFP UI: counts, best reward, slot use, proposals."""
    results = [r for _, r in open_experiment(experiment_uri).records.history(state.study) if r]
    rewards = [r.reward for r in results if r.completed and r.reward is not None]
    summary = {
        "trials_completed": float(state.completed),
        "trials_failed": float(state.failed),
        "slot_utilization": round(state.utilization, 4),
        "proposal_seconds": round(state.proposal_s, 3),
    }
    return summary | ({"best_reward": max(rewards)} if rewards else {})


def run_search(
    exp: Experiment,
    study: str,
    launcher: Launcher,
    *,
    parallelism: int,
    run_id: str,
    clock: Clock | None = None,
    poll_s: float = 5.0,
    log: Callable[[str], None] = print,
) -> ControllerState:
    """``search_study`` with the launcher and clock given (tests and the benchmark use it)."""
    controller = _Controller(exp, study, launcher, parallelism, run_id, clock or SystemClock(), log)
    return controller.run(poll_s)


class _Controller:
    """The loop of ``run_search``: its state is only what the store and the launcher hold."""

    def __init__(
        self,
        exp: Experiment,
        study: str,
        launcher: Launcher,
        parallelism: int,
        run_id: str,
        clock: Clock,
        log: Callable[[str], None],
    ):
        self.exp, self.study, self.launcher, self.clock, self.log = exp, study, launcher, clock, log
        budget = exp.spec.study(study).budget
        self.max_failures = budget.max_consecutive_failures
        self.state = ControllerState(
            run_id=run_id,
            study=study,
            parallelism=parallelism,
            budget=budget.rounds * budget.trials_per_round,
            launcher=launcher.NAME,
        )
        self.running: dict[int, str] = {}  # trial id -> job name
        self.measuring: dict[int, str] = {}  # trial id -> measurement job name (at most one)
        self.to_measure: list[int] = []  # trained trials waiting for their measurement
        self.starts: dict[int, int] = {}  # trial id -> jobs this controller started for it
        self.ahead: list[int] = []  # proposed ahead, not started yet
        self.last_proposal_s = 0.0
        self.resumed_finished = 0  # trials that had ended before this controller started
        self.max_attempts = budget.max_attempts
        self.schedule = halving_schedule(exp.spec.study(study))
        self.promotable = True  # whether a promotion may be possible (see ``_promote``)
        self.started = clock.time()
        self.last = self.started
        self.failure: StudyStoppedError | None = None

    def run(self, poll_s: float) -> ControllerState:
        self.launcher.check()
        acquire(self.exp, self.state, self.clock.time())
        self._resume()
        try:
            while True:
                self._collect()
                self._collect_measurements()
                if not self.state.reason:
                    self._fill()
                self._measure_next()
                idle = not (self.running or self.measuring or self.to_measure)
                if idle and (self.state.reason or self._spent()):
                    break
                self._heartbeat()
                jobs = [*self.running.values(), *self.measuring.values()]
                self.launcher.wait(jobs, poll_s, self.clock.sleep)
        except BaseException as e:
            self._heartbeat(state="failed", reason=f"{type(e).__name__}: {e}")
            raise
        done = self.state.reason or "budget spent"
        self._heartbeat(state="failed" if self.failure else "finished", reason=done)
        self.log(
            f"{self.study}: {done}; {self.state.completed} completed, {self.state.failed} failed, "
            f"slots busy {self.state.utilization:.0%} of the time"
        )
        if self.failure is not None:
            raise self.failure
        return self.state

    def _spent(self) -> bool:
        return self.state.proposed >= self.state.budget

    def _resume(self) -> None:
        """Counts the stored trials and adopts (or starts) those without a result.

        Every trial without a result is started (a job of its name still running is adopted):
        a trial proposed ahead by the controller before it stopped included.
        """
        for spec, result in self.exp.records.history(self.study):
            self.state.proposed += spec.promoted_from is None  # promotions are not proposals
            if result is None and self.exp.records.read_trained(self.study, spec.trial_id):
                self.to_measure.append(spec.trial_id)
            elif result is None:
                self._start(spec.trial_id)
            else:
                self._count(result)
                self.resumed_finished += 1

    def _start(self, trial_id: int) -> None:
        job = TrialJob(self.exp.uri, self.study, trial_id, kind=job_kind(self.study))
        location = self.launcher.start(job)
        self.exp.store.write_text(
            self.exp.layout.trial_launch(self.study, trial_id),
            json.dumps(location, indent=1, sort_keys=True),
        )
        self.running[trial_id] = job.name
        self.state.running[str(trial_id)] = location
        self.starts[trial_id] = self.starts.get(trial_id, 0) + 1

    def _collect(self) -> None:
        """Records every finished job; the time since the last poll counts as busy slot time."""
        now = self.clock.time()
        self.state.busy_s += len(self.running) * (now - self.last)
        self.state.elapsed_s, self.last = now - self.started, now
        statuses = self.launcher.poll(self.running.values()) if self.running else {}
        for trial_id, name in list(self.running.items()):
            status = statuses.get(name, JobStatus(JobState.MISSING))
            if status.state.active:
                continue
            del self.running[trial_id]
            del self.state.running[str(trial_id)]
            if self._retry(trial_id, status):
                continue
            outcome = record_job_end(self.exp, self.study, trial_id, status)
            if isinstance(outcome, TrialTraining):
                self.to_measure.append(trial_id)  # its slot is free: it measures elsewhere
            else:
                self._finished(outcome)
        if not self.state.reason and stop_requested(self.exp, self.study, self.state.run_id):
            self.state.reason = "stopped by request (kfnas stop)"
            self.log(f"{self.study}: stop requested; waiting for {len(self.running)} trials")

    def _retry(self, trial_id: int, status: JobStatus) -> bool:
        """Starts a failed job's trial again while it has attempts left; whether it did.

        A launcher whose jobs retry themselves (Kubernetes Jobs: ``backoffLimit`` and the
        ``podFailurePolicy``) reports a failure only when no retry is left. For the others (local
        processes), a job that died without a result is started again until the trial used up
        ``budget.max_attempts``: counted by the trial's own attempt records (``run_trial`` resumes
        it from its last checkpoint) and by this controller's starts, for a job that died before
        recording one.
        """
        if status.state is not JobState.FAILED or self.launcher.RETRIES_ITSELF:
            return False
        records = self.exp.records
        if records.read_result(self.study, trial_id) or records.read_trained(self.study, trial_id):
            return False
        if attempts_exhausted(self.exp, self.study, trial_id) is not None:
            return False  # recorded FAILED just now, with where each attempt was killed
        if self.starts.get(trial_id, 0) >= self.max_attempts:
            return False
        self.log(f"{self.study} trial {trial_id}: {status.reason or 'failed'}; starting it again")
        self._start(trial_id)
        return True

    def _finished(self, result: TrialResult) -> None:
        self._count(result)
        self.promotable = True
        reward = f" reward {result.reward:.4f}" if result.reward is not None else ""
        latency = result.metrics.get("latency_ms")
        self.log(
            f"{self.study} trial {result.trial_id}: {result.status.value}{reward}"
            + (f" latency {latency:.2f} ms" if latency is not None else "")
            + (f" ({result.error})" if result.error else "")
            + f" [{len(self.running)}/{self.state.parallelism} slots busy, "
            f"{self.state.completed + self.state.failed}/{self.state.budget} done]"
        )

    def _collect_measurements(self) -> None:
        """Records every finished measurement; one that died without a result is FAILED."""
        statuses = self.launcher.poll(self.measuring.values()) if self.measuring else {}
        for trial_id, name in list(self.measuring.items()):
            status = statuses.get(name, JobStatus(JobState.MISSING))
            if status.state.active:
                continue
            del self.measuring[trial_id]
            result = record_job_end(self.exp, self.study, trial_id, status, measuring=True)
            assert isinstance(result, TrialResult)
            self._finished(result)

    def _measure_next(self) -> None:
        """Starts the next waiting measurement when none runs: one model at a time."""
        if self.measuring or not self.to_measure:
            return
        trial_id = self.to_measure.pop(0)
        job = TrialJob(self.exp.uri, self.study, trial_id, kind=MEASURE_KIND)
        self.launcher.start(job)
        self.measuring[trial_id] = job.name

    def _count(self, result: TrialResult) -> None:
        if result.completed:
            self.state.completed += 1
        else:
            self.state.failed += 1

    def _fill(self) -> None:
        """Fills the free slots: trials proposed ahead first, then one proposal for the rest.

        The same proposal also refills the trials proposed *ahead* (their ``trial.json`` written,
        their jobs not started), so a slot that frees starts one at once instead of waiting for a
        proposal, which replays the trials since the search snapshot and decodes their
        architectures (seconds on a large space). Enough are kept ahead to
        cover the slots expected to free while one proposal runs (``_ahead_target``). They are
        proposed from the results known then: a few results older than a proposal made when
        their slot freed, as in asynchronous evolution.
        """
        free = self.state.parallelism - len(self.running)
        for trial_id in self._promote(free):
            self._start(trial_id)
            free -= 1
        while free > 0 and self.ahead:
            self._start(self.ahead.pop(0))
            free -= 1
        left = self.state.budget - self.state.proposed
        wanted = min(free + self._ahead_target() - len(self.ahead), left)
        if wanted <= 0:
            return
        ids = self._propose(wanted)
        for trial_id in ids[:free]:
            self._start(trial_id)
        self.ahead += ids[free:]

    def _promote(self, free: int) -> list[int]:
        """ASHA's promotions for up to ``free`` slots (multi-fidelity studies only).

        A slot that frees goes first to the best unpromoted trial of the highest rung that has
        one (``kfnas.search.asha``), which continues from its checkpoint to the next rung's
        budget; only then to a new architecture. Promotions do not count against the study's
        budget of proposals, and go on after it is spent until no rung has one to give.
        """
        if free < 1 or self.schedule is None or not self.promotable:
            return []
        specs = promote_trials(self.exp, self.study, free, self.exp.records.history(self.study))
        # Only a new result can make another promotion possible (``_finished``): until one
        # arrives, free slots do not read the study's records again.
        self.promotable = len(specs) == free
        for spec in specs:
            self.log(
                f"{self.study} trial {spec.promoted_from} promoted to rung {spec.rung} "
                f"({spec.budget['train_steps']} steps) as trial {spec.trial_id}"
            )
        self.state.promoted += len(specs)
        return [spec.trial_id for spec in specs]

    def _ahead_target(self) -> int:
        """Trials to keep proposed ahead: the slots expected to free during one proposal, + 1."""
        finished = self.state.completed + self.state.failed - self.resumed_finished
        rate = finished / self.state.elapsed_s if self.state.elapsed_s > 0 else 0.0
        expected = math.ceil(self.last_proposal_s * rate)
        return max(1, min(self.state.parallelism, expected + 1))

    def _propose(self, n: int) -> list[int]:
        """Proposes ``n`` trials as a new round (their ``trial.json``); [] when it must stop."""
        history = self.exp.records.history(self.study)
        try:
            check_failures(self.study, history, self.max_failures)
        except StudyStoppedError as e:
            self.failure = e
            self.state.reason = "too many failed trials in a row"
            self.log(f"{self.study}: {e}")
            return []
        next_round = max((spec.round for spec, _ in history), default=0) + 1
        began = self.clock.time()
        try:
            ids = propose_round(self.exp, self.study, next_round, n=n, history=history)
        except SpaceExhausted as e:
            self.state.reason = f"search space exhausted ({e})"
            self.log(f"{self.study}: {e}")
            return []
        self.last_proposal_s = self.clock.time() - began
        self.state.proposal_s += self.last_proposal_s
        self.state.proposed += len(ids)
        return ids

    def _heartbeat(self, state: str = "", reason: str = "") -> None:
        now = self.clock.time()
        self.state.heartbeat = now
        if state:
            self.state.state, self.state.reason = state, reason
        elif self.state.reason:
            self.state.state = "stopping"
        write_state(self.exp, self.state)
