"""Stages of a search study: create the experiment, propose, train, rank and retrain trials.

``init_experiment`` validates a run and writes ``experiment.json``; per round ``propose_trials``
writes trial specs and ``run_trial`` trains each; ``select_top`` ranks a study and
``propose_retraining`` copies the best into the next study (``validation``, ``final``).

A trial survives its pod: ``run_trial`` records each attempt (``attempts/<n>.json``), resumes
from the newest complete checkpoint in the store and uploads checkpoints while it trains
(``kfnas.training.checkpoints``); after ``budget.max_attempts`` attempts without a result the
trial is FAILED (``attempts_exhausted``, which the step scheduling trials calls too).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kfnas.config.settings import ExperimentSettings
from kfnas.config.spec import BudgetSpec, ExperimentSpec
from kfnas.launch.tf_config import cluster_role
from kfnas.records.trial import (
    RecordError,
    TrialAttempt,
    TrialResult,
    TrialSpec,
    TrialStatus,
    TrialTraining,
)
from kfnas.stages._common import best_trials, create_experiment, propose_round, trial_seed
from kfnas.stages._common import promote_trials as _promote_trials
from kfnas.stages._monitor import TrialMonitor
from kfnas.store import (
    Experiment,
    ObjectExists,
    open_experiment,
)
from kfnas.store.lease import ClaimOutcome, claim_trial
from kfnas.store.trials import TrialAlreadyFinished
from kfnas.tasks import TASKS
from kfnas.tasks.frameworks import framework_of
from kfnas.training.checkpoints import CheckpointUploader, TrialCheckpoints
from kfnas.validation import check_data, experiment_spec

log = logging.getLogger(__name__)


def init_experiment(spec_yaml: str, overrides: Sequence[str] = (), **settings: Any) -> str:
    """Validates a spec and writes it, resolved, as the experiment's ``experiment.json``.

    Everything that can be checked before GPU time is spent is checked here: the spec, the data
    (patterns match files, records parse in the task's format, labels fit) and, when the
    experiment is created, the store (it must take create-only and conditional writes, which the
    trial leases and records rely on: ``kfnas.store.schemes.store_problems``). The spec gets the
    retraining studies it lacks (``kfnas.validation.complete_studies``). Running it again with the
    same spec is a no-op, so a resubmitted pipeline resumes the experiment.

    Args:
        spec_yaml: The experiment spec as YAML text, or ``"demo"`` (or empty) for the built-in demo.
        overrides: Dotted ``key=value`` overrides applied to it, last.
        **settings: Named settings (the fields of ``kfnas.config.settings.ExperimentSettings``, e.g.
            ``train_data=...``, ``proxy_train_steps=...``), applied before ``overrides``; an empty
            string or 0 keeps the spec's value.

    Returns:
        The experiment URI, ``<store_root>/<name>``.

    Raises:
        SpecError: The spec or a setting is invalid, or the store already holds a different
            experiment of that name (choose another name, or resume with the same spec).
    """
    spec = experiment_spec(spec_yaml, overrides, ExperimentSettings.from_kwargs(settings))
    check_data(spec)
    return create_experiment(spec).uri


def propose_trials(experiment_uri: str, study: str, round_index: int, n: int = 0) -> list[int]:
    """Proposes the trials of one round of a study and writes their ``trial.json``.

    The controller is rebuilt from the stored history on every call; proposing again for a round
    that already has trials returns those trials' ids.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study's name in the spec.
        round_index: The round, from 1.
        n: How many trials (0: the study's ``budget.trials_per_round``).

    Returns:
        The trial ids of the round, in proposal order.

    Raises:
        StudyStoppedError: The last ``max_consecutive_failures`` trials all failed.
    """
    return propose_round(open_experiment(experiment_uri), study, round_index, n=n)


def promote_trials(experiment_uri: str, study: str, n: int = 1) -> list[int]:
    """Writes up to ``n`` ASHA promotions of a multi-fidelity study (``trial.json`` each).

    Each is the best unpromoted trial of the highest rung that has one, continued from its
    checkpoint to the next rung's steps by ``run_trial`` (``kfnas.search.asha``). The search
    controller promotes as slots free; ``kfnas study`` after each trial, one at a time.

    Returns:
        The new trial ids; [] for a study without multi-fidelity or when nothing can be promoted.
    """
    exp = open_experiment(experiment_uri)
    return [spec.trial_id for spec in _promote_trials(exp, study, n, exp.records.history(study))]


def run_trial(
    experiment_uri: str, study: str, trial_id: int, *, measure: bool = True
) -> TrialResult | TrialTraining:
    """Trains and evaluates one proposed trial, measures it unless told not to, and records it.

    With ``measure`` (the default: ``kfnas trial``, tests) the model is measured in this process
    right after training (``kfnas.training.measurement``) and ``result.json`` written. Without
    it (a trial pod: ``python -m kfnas.stages.worker --train-only``, the ``run_trial`` step) a
    trial that trained well is recorded as ``trained.json`` and returned as its
    ``TrialTraining``: the measurement step (``kfnas.stages.measure``) measures it on the latency
    device and writes ``result.json``; a trial that failed or diverged gets its ``result.json``
    at once.

    Idempotent: a trial whose ``result.json`` exists is returned as it is, without training, so a
    resubmitted pipeline skips finished work; one already trained is not trained again (with
    ``measure`` it is measured). Otherwise it records an attempt; a trial that already
    used ``budget.max_attempts`` attempts is recorded FAILED without training
    (``attempts_exhausted``). Training resumes from the trial's newest complete checkpoint in the
    store, logs included, and checkpoints to the store on the budget's schedule. The checkpoint
    and TensorBoard logs are uploaded to the trial's ``model/`` and ``logs/`` before
    ``result.json``, which is written last and counts the attempts and the step each started from.
    A trial that fails or diverges is recorded as FAILED or INFEASIBLE; this function does not
    raise for it.

    A trial trained by several processes (``TF_CONFIG``: ``kfnas.launch.tf_config``) is run this
    way by its chief only; every other process trains in lockstep from the same stored checkpoint
    into a temporary folder and writes nothing to the store (``_run_as_worker``).

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study's name.
        trial_id: A trial written by ``propose_trials``.
        measure: Measure the trained model here and write ``result.json``.

    Returns:
        The trial's result, or its ``TrialTraining`` when trained but not measured (for a
        non-chief process: how its own training ended, not recorded).

    Raises:
        ClusterConfigError: ``TF_CONFIG`` is set but not valid, or names this process nowhere.
    """
    exp = open_experiment(experiment_uri)
    records = exp.records
    role = cluster_role()  # a multi-node trial's TF_CONFIG, checked before anything else
    done = records.read_result(study, trial_id)
    if done is not None:
        return done
    if role is not None and not role.chief:
        return _run_as_worker(exp, records.read_spec(study, trial_id), role.name)
    trained = records.read_trained(study, trial_id)
    if trained is not None:
        if not measure:
            return trained
        from kfnas.stages.measure import measure_trial

        return measure_trial(experiment_uri, study, trial_id)
    # One runner per trial: a second one (a resubmitted run, a retry of a live pod) waits for
    # the first's result, or takes the trial over once the first's lease expires.
    trial = records.read_spec(study, trial_id)
    budget = BudgetSpec(**trial.budget)  # the trial's own (as run)
    with claim_trial(
        exp.store,
        exp.layout,
        study,
        trial_id,
        ttl_s=budget.lease_timeout_s,
        renew_every_s=budget.lease_renew_s,
    ) as claim:
        if claim.outcome is ClaimOutcome.ACQUIRED:
            return _run_claimed(exp, trial, claim.check, measure)
    # DONE: another runner finished it (a corrupt result.json reads as a FAILED stand-in)
    finished = records.read_result(study, trial_id) or records.read_trained(study, trial_id)
    assert finished is not None
    return finished


def _run_claimed(
    exp: Experiment, trial: TrialSpec, check: Callable[[], None], measure: bool
) -> TrialResult | TrialTraining:
    """``run_trial`` for the runner holding the trial's lease; ``check`` raises once it is lost."""
    records, study, trial_id = exp.records, trial.study, trial.trial_id
    exhausted = attempts_exhausted(exp, study, trial_id)
    if exhausted is not None:
        return exhausted
    from kfnas.training.runner import LOGS_DIR, MODEL_DIR

    execute_trial = trainer_of(exp.spec)  # the task's framework: TensorFlow or torch

    checkpoints = TrialCheckpoints(exp.store, exp.layout.trial_checkpoints_dir(study, trial_id))
    with tempfile.TemporaryDirectory(prefix=f"kfnas-trial-{trial_id}-") as work:
        model_dir, logs_dir = Path(work) / MODEL_DIR, Path(work) / LOGS_DIR
        from_step = _restore(exp, trial, checkpoints, model_dir, logs_dir)
        attempt = record_attempt(exp, study, trial_id, from_step)
        uploader = CheckpointUploader(checkpoints, logs_dir, Path(work) / "staging", attempt)
        try:
            result = execute_trial(
                exp.spec,
                trial,
                work,
                on_checkpoint=uploader,
                measure=measure,
                on_evaluation=TrialMonitor(exp, trial),
            )
        finally:
            uploader.close()
        uploads = {
            MODEL_DIR: exp.layout.trial_model_dir(study, trial_id),
            LOGS_DIR: exp.layout.trial_logs_dir(study, trial_id),
        }
        for local, remote in uploads.items():
            if (Path(work) / local).is_dir():
                check()  # a runner that lost its lease writes nothing more
                exp.store.upload_dir(Path(work) / local, remote)
        if isinstance(result, TrialTraining) or result.completed:
            model_uri = exp.store.uri(exp.layout.trial_model_dir(study, trial_id))
            result = dataclasses.replace(result, model_uri=model_uri)
    started = [a.from_step if a else 0 for a in read_attempts(exp, study, trial_id).values()]
    result = dataclasses.replace(result, attempts=len(started), start_steps=tuple(started))
    check()
    if isinstance(result, TrialTraining):
        # A metric with no value (NaN: an evaluator's empty category) has no JSON form.
        finite = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
        records.write_trained(study, dataclasses.replace(result, metrics=finite))
    else:
        records.write_result(study, result)
    return result


def _restore(
    exp: Experiment,
    trial: TrialSpec,
    checkpoints: TrialCheckpoints,
    model_dir: Path,
    logs_dir: Path,
) -> int:
    """Restores the trial's newest complete checkpoint; the step training resumes from.

    A promoted trial (``TrialSpec.promoted_from``, multi-fidelity) without a checkpoint of its own
    starts from its parent's newest one, logs included: it continues the parent's training to its
    rung's larger budget. A parent without a checkpoint (deleted) makes it train from step 0.
    """
    latest = checkpoints.latest()
    if latest is not None and checkpoints.restore(latest, model_dir, logs_dir):
        return latest.step
    if trial.promoted_from is None:
        return 0
    parent = TrialCheckpoints(
        exp.store, exp.layout.trial_checkpoints_dir(trial.study, trial.promoted_from)
    )
    inherited = parent.latest()
    if inherited is not None and parent.restore(inherited, model_dir, logs_dir):
        log.info(
            "%s trial %d continues trial %d from step %d",
            trial.study,
            trial.trial_id,
            trial.promoted_from,
            inherited.step,
        )
        return inherited.step
    log.warning(
        "%s trial %d: its parent trial %d has no checkpoint to continue; it trains from step 0",
        trial.study,
        trial.trial_id,
        trial.promoted_from,
    )
    return 0


def _run_as_worker(exp: Experiment, trial: TrialSpec, name: str) -> TrialResult | TrialTraining:
    """A non-chief process of a multi-node trial: trains beside the chief and records nothing.

    It starts from the newest complete checkpoint in the store (a promotion's: its parent's), as
    the chief does (they must hold the same weights), and saves its own checkpoints into a
    temporary folder, which is dropped.
    If the chief never trains (the trial finished meanwhile, or its attempts are spent), this
    process's first collective fails once the chief's process is gone and its result is FAILED.
    """
    from kfnas.training.runner import LOGS_DIR, MODEL_DIR

    execute_trial = trainer_of(exp.spec)

    study, trial_id = trial.study, trial.trial_id
    checkpoints = TrialCheckpoints(exp.store, exp.layout.trial_checkpoints_dir(study, trial_id))
    with tempfile.TemporaryDirectory(prefix=f"kfnas-trial-{trial_id}-worker-") as work:
        _restore(exp, trial, checkpoints, Path(work) / MODEL_DIR, Path(work) / LOGS_DIR)
        result = execute_trial(exp.spec, trial, work, measure=False)
    status = "trained" if isinstance(result, TrialTraining) else result.status.value
    log.info("%s of %s trial %d: %s (the chief records the result)", name, study, trial_id, status)
    return result


def trainer_of(spec: ExperimentSpec) -> Callable[..., TrialResult | TrialTraining]:
    """The trainer of the spec's task kind's framework (``kfnas.tasks.frameworks``)."""
    return framework_of(TASKS.get(spec.task.kind)).entry("trainer")


def read_attempts(exp: Experiment, study: str, trial_id: int) -> dict[int, TrialAttempt | None]:
    """The trial's attempt records by number (None for one that cannot be read), in order."""
    folder = exp.layout.trial_attempts_dir(study, trial_id)
    attempts: dict[int, TrialAttempt | None] = {}
    for name in exp.store.list(folder):
        stem = name.removesuffix(".json")
        if "/" in name or not stem.isdigit():
            continue
        path = exp.layout.trial_attempt(study, trial_id, int(stem))
        try:
            attempts[int(stem)] = TrialAttempt.from_json(exp.store.read_text(path))
        except (RecordError, UnicodeDecodeError) as e:
            log.warning("attempt record %s is unreadable (%s); it still counts", path, e)
            attempts[int(stem)] = None
    return dict(sorted(attempts.items()))


def record_attempt(exp: Experiment, study: str, trial_id: int, from_step: int) -> int:
    """Records, create-only, that an attempt of the trial starts now; returns its number.

    The number is the next free one: when another runner takes it first, the next is tried.
    """
    number = max(read_attempts(exp, study, trial_id), default=0) + 1
    while True:
        attempt = TrialAttempt(
            attempt=number,
            host=os.environ.get("HOSTNAME") or socket.gethostname(),
            pid=os.getpid(),
            started=time.time(),
            from_step=from_step,
        )
        path = exp.layout.trial_attempt(study, trial_id, number)
        try:
            exp.store.write_text(path, attempt.to_json(), if_absent=True)
            return number
        except ObjectExists:
            number += 1


def attempts_exhausted(exp: Experiment, study: str, trial_id: int) -> TrialResult | None:
    """Records the trial FAILED when it used up ``budget.max_attempts`` attempts without a result.

    ``run_trial`` calls it before each attempt; the step that schedules trials calls it for a
    trial whose job ended without a result. Call it only when no runner of the trial is alive:
    a live attempt counts as used.

    Returns:
        The FAILED result now recorded ("killed N times at steps [...], last seen ..."), or None
        when the trial has a result already or attempts left.
    """
    records = exp.records
    if records.read_result(study, trial_id) is not None:
        return None
    budget = BudgetSpec(**records.read_spec(study, trial_id).budget)
    attempts = read_attempts(exp, study, trial_id)
    if len(attempts) < budget.max_attempts:
        return None
    checkpoints = TrialCheckpoints(exp.store, exp.layout.trial_checkpoints_dir(study, trial_id))
    latest = checkpoints.latest()
    starts = [a.from_step if a else 0 for a in attempts.values()]
    # Where each attempt was killed, as far as the store knows: the checkpoint it got to (the one
    # the next attempt resumed from, or a stored one it wrote; the last: the newest checkpoint).
    wrote = {c.attempt: c.step for c in checkpoints.complete()}
    nexts = [*starts[1:], latest.step if latest else 0]
    reached = [
        max(start, after, wrote.get(number, 0))
        for number, start, after in zip(attempts, starts, nexts, strict=True)
    ]
    seen = [a.started for a in attempts.values() if a] + ([latest.time] if latest else [])
    when = (
        datetime.datetime.fromtimestamp(max(seen), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if seen
        else "never"
    )
    result = TrialResult(
        trial_id,
        TrialStatus.FAILED,
        error=(
            f"killed {len(attempts)} times at steps {reached}, last seen {when}; raise "
            f"budget.max_attempts or look at the pod logs"
        ),
        attempts=len(attempts),
        start_steps=tuple(starts),
    )
    try:
        records.write_result(study, result)
    except TrialAlreadyFinished:
        return None
    return result


def select_top(experiment_uri: str, study: str, k: int) -> list[int]:
    """The ids of the ``k`` best COMPLETED trials of a study, best first (ties: lower id first).

    Raises:
        StudyStoppedError: The study has no completed trial (the message lists why trials ended).
        ValueError: ``k`` is not positive.
    """
    return best_trials(open_experiment(experiment_uri).records.history(study), study, k)


def propose_retraining(
    experiment_uri: str, source_study: str, study: str, source_trial_ids: Sequence[int]
) -> list[int]:
    """Writes trials of ``study`` that train architectures of ``source_study`` trials again.

    Each new trial copies its source trial's space, DNA and architecture, takes ``study``'s budget
    (for the ``validation`` and ``final`` studies, the full-training budget) and a seed of its own,
    and records where it came from in ``source_study`` / ``source_trial``. A source trial already
    retrained in ``study`` keeps its trial, so calling this again returns the same ids.

    Args:
        experiment_uri: From ``init_experiment``.
        source_study: The study whose trials are retrained (``proxy``, ``validation``).
        study: The study the new trials belong to (``validation``, ``final``).
        source_trial_ids: The trials to retrain, e.g. from ``select_top``.

    Returns:
        The ids of the trials of ``study``, one per source trial, in the order given.

    Raises:
        SpecError: ``study`` is not a study of the experiment.
        ValueError: ``source_study`` is ``study``.
        ObjectNotFound: A source trial does not exist.
    """
    if source_study == study:
        raise ValueError(f"a study cannot retrain its own trials ({study!r})")
    exp = open_experiment(experiment_uri)
    study_spec = exp.spec.study(study)
    records = exp.records
    retrained = {
        spec.source_trial: spec.trial_id
        for spec, _ in records.history(study)
        if spec.source_study == source_study
    }
    next_id = records.next_trial_id(study)
    budget = dataclasses.asdict(study_spec.budget)
    for source_id in source_trial_ids:
        if source_id in retrained:
            continue
        source = records.read_spec(source_study, source_id)
        records.write_spec(
            dataclasses.replace(
                source,
                study=study,
                trial_id=next_id,
                round=1,
                budget=budget,
                seed=trial_seed(study_spec, next_id),
                source_study=source_study,
                source_trial=source_id,
            )
        )
        retrained[source_id] = next_id
        next_id += 1
    return [retrained[source_id] for source_id in source_trial_ids]
