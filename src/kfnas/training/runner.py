"""Running one trial: architecture -> model -> training -> measurements -> reward.

``execute_trial`` is the glue between the parts that know nothing of each other: the search space
builds the backbone, the task kind wraps it into its official.vision model and input pipeline, the
trainer trains and evaluates, and (unless the measurement step does it on the latency device)
``kfnas.training.measurement`` measures the model by the fixed protocol and folds the constraints
into the reward. It works in a local folder and returns a ``TrialResult`` (or, trained but not
measured, a ``TrialTraining``); it never raises for a bad architecture (FAILED or INFEASIBLE
instead), so one bad trial cannot stop a study. Storing the outputs is the caller's job
(``kfnas.stages.run_trial``).

To extend what a trial measures: see ``kfnas.training.measurement``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyglove as pg

from kfnas.config.spec import BudgetSpec, ExperimentSpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus, TrialTraining
from kfnas.spaces import declared_options, get_space
from kfnas.tasks import TASKS
from kfnas.tasks.tracing import plain_swish_on_cpu, without_autograph
from kfnas.training.hparams import record_trial

log = logging.getLogger(__name__)

# Subfolders of the work folder; the caller uploads them as the trial's model/ and logs/.
MODEL_DIR = "model"
LOGS_DIR = "logs"


def execute_trial(
    spec: ExperimentSpec,
    trial: TrialSpec,
    work_dir: str | Path,
    *,
    on_checkpoint: Callable[[int, str], None] | None = None,
    distribution: Any = None,
    measure: bool = True,
    on_evaluation: Callable[[int, Mapping[str, float]], str] | None = None,
) -> TrialResult | TrialTraining:
    """Builds, trains, evaluates and (with ``measure``) measures one trial.

    Training checkpoints on the trial budget's schedule (``checkpoint_every_steps``,
    ``checkpoint_every_minutes``) besides its evaluations and the end; a checkpoint already in
    ``model/`` (a rerun's restored one) is resumed from.

    Args:
        spec: The experiment spec (task, data, objectives); resolved here if it is not.
        trial: The trial: its space, architecture JSON, budget and seed.
        work_dir: A local folder for the checkpoint (``model/``) and TensorBoard logs (``logs/``).
        on_checkpoint: Called as ``on_checkpoint(step, prefix)`` after each checkpoint is saved
            (``kfnas.training.checkpoints.CheckpointUploader`` copies it to the store).
        distribution: The ``kfnas.training.distribution.Distribution`` to train under; ``None``:
            chosen from the devices, ``TF_CONFIG`` and the ``KFNAS_*`` runtime variables. A
            global batch that does not divide across its replicas fails the trial before
            training. The result's ``runtime`` records it.
        measure: Whether to measure the model here (this device, the protocol of
            ``kfnas.training.protocol``) and compute the reward. Without it a trial that trained
            well returns its ``TrialTraining``, measured later by the measurement step on the
            latency device (or, on a non-chief worker of a multi-node trial, never recorded).
        on_evaluation: Called as ``on_evaluation(step, metrics)`` after each periodic
            evaluation (``budget.evaluations`` > 1); a non-empty return is a reason to stop
            training there (early stopping: ``kfnas.stages.run_trial`` writes the trial's curve
            and asks the study's rule). A stopped trial keeps that evaluation's metrics (with its
            ``eval_step``) and is marked ``stopped_early``.

    Returns:
        COMPLETED with metrics (the task's metrics plus ``params``, ``flops`` in multiply-adds,
        ``latency_ms`` and its spread), reward and objectives, or the ``TrialTraining`` without
        ``measure``; INFEASIBLE when the loss became NaN or infinite; FAILED with the error when
        anything raised. Whatever the outcome, ``logs/`` gets the trial's TensorBoard HParams and
        final metrics (``kfnas.training.hparams``).
    """
    start = time.monotonic()
    work = Path(work_dir)
    result: TrialResult | TrialTraining
    try:
        result = _execute(
            trial_experiment_spec(spec, trial),
            trial,
            work,
            start,
            on_checkpoint,
            distribution,
            measure,
            on_evaluation,
        )
    except Exception as e:  # A trial's failure must not stop the study.
        (work / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        (work / LOGS_DIR / "error.txt").write_text(traceback.format_exc())
        log.warning("trial %d failed: %s", trial.trial_id, e)
        result = TrialResult(
            trial.trial_id,
            TrialStatus.FAILED,
            error=f"{type(e).__name__}: {e}",
            duration_s=time.monotonic() - start,
        )
    # Every process writes into its own logs/ as the trainer does; only the chief's are kept.
    record_trial(work / LOGS_DIR, spec, trial, result)
    return result


def _execute(
    spec: ExperimentSpec,
    trial: TrialSpec,
    work: Path,
    start: float,
    on_checkpoint: Callable[[int, str], None] | None,
    distribution: Any,
    measure: bool,
    on_evaluation: Callable[[int, Mapping[str, float]], str] | None = None,
) -> TrialResult | TrialTraining:
    from kfnas.training.distribution import batch_problems, choose_distribution
    from kfnas.training.trainer import train_and_evaluate

    distribution = distribution or choose_distribution()  # first: it may configure collectives
    runtime = distribution.record()
    budget = BudgetSpec(**trial.budget)
    task_kind = TASKS.get(spec.task.kind)
    # The trial's own space says which extra knobs task.options may hold (a module:object space
    # is not in the registry the task would otherwise consult).
    space_options = declared_options(spec.task.kind, [get_space(trial.space)])
    official_task = task_kind.build_task(spec.task, spec.data, budget, space_options)
    if problems := batch_problems(official_task.task_config, distribution.replicas):
        return TrialResult(
            trial.trial_id,
            TrialStatus.FAILED,
            error="; ".join(problems),
            duration_s=time.monotonic() - start,
            runtime=runtime,
        )
    with distribution.scope(), plain_swish_on_cpu():  # a cheaper trace (kfnas.tasks.tracing)
        model = build_trial_model(spec, trial, official_task)
    evaluations = min(budget.evaluations, budget.train_steps)
    outcome = train_and_evaluate(
        official_task,
        model,
        task_kind.optimizer_config(spec.task, budget, space_options),
        distribution=distribution,
        runtime_config=distribution.runtime_config(),
        train_steps=budget.train_steps,
        log_dir=str(work / LOGS_DIR),
        checkpoint_dir=str(work / MODEL_DIR),
        eval_every=budget.train_steps // evaluations if evaluations > 1 else None,
        seed=trial.seed,
        checkpoint_every_steps=budget.checkpoint_every_steps,
        checkpoint_every_seconds=budget.checkpoint_every_minutes * 60,
        on_checkpoint=on_checkpoint,
        on_evaluation=on_evaluation,
    )
    duration = time.monotonic() - start
    if outcome.status is not TrialStatus.COMPLETED:
        return TrialResult(
            trial.trial_id,
            outcome.status,
            error=outcome.error,
            duration_s=duration,
            runtime=runtime,
        )
    if outcome.stopped_early:  # its last evaluation, where the rule stopped it
        evaluated = {**outcome.metrics, "eval_step": float(outcome.steps_done)}
    else:
        evaluated = best_evaluation(outcome, spec.objectives.metric, evaluations)
    metrics = {
        **evaluated,
        "train_steps_per_second": outcome.steps_per_second,
        "train_seconds": outcome.train_seconds,
        "checkpoint_seconds": outcome.checkpoint_seconds,
        # 1 unless the first trace created variables or needed AutoGraph (a slower first step)
        "train_step_traces": float(outcome.step_traces),
    }
    training = TrialTraining(
        trial.trial_id,
        metrics,
        duration_s=duration,
        runtime=runtime,
        stopped_early=bool(outcome.stopped_early),
        stop_reason=outcome.stopped_early,
    )
    if not measure:  # the measurement step measures it on the latency device
        return training
    from kfnas.training.measurement import (
        latency_device,
        measure_trial_model,
        restore_trial_model,
        score_trial,
    )

    if distribution.replicas > 1:
        # Reading a distributed model's batch-norm statistics is an all-reduce the other
        # processes no longer join: measure a copy outside the strategy, restored from the final
        # checkpoint every process saved in step.
        with distribution.scope(distributed=False):
            model = restore_trial_model(spec, trial, work / MODEL_DIR)
    device, threads = latency_device()
    measured = measure_trial_model(spec, trial, model, threads=threads)
    result = score_trial(spec, training, measured, device=device)
    return dataclasses.replace(result, duration_s=time.monotonic() - start)


def local_trial(
    spec: ExperimentSpec, study: str, *, arch_json: str | None = None, seed: int = 0
) -> TrialSpec:
    """A trial of ``study`` outside any search: a given architecture JSON, or a random one.

    This is the local search test: one trial, trained and measured exactly as in a search.
    """
    from kfnas.spaces.base import architecture_json, dna_spec

    study_spec = spec.study(study)
    space = get_space(study_spec.space)
    dna_json = ""  # A given architecture has no DNA; the trial needs only its arch_json.
    if arch_json is None:
        dna = pg.random_dna(dna_spec(space), random.Random(seed))
        dna_json, arch_json = pg.to_json_str(dna), architecture_json(space, dna)
    return TrialSpec(
        experiment=spec.name,
        study=study,
        trial_id=0,
        round=1,
        space=study_spec.space,
        dna_json=dna_json,
        arch_json=arch_json,
        budget=dataclasses.asdict(study_spec.budget),
        seed=seed,
    )


def trial_experiment_spec(spec: ExperimentSpec, trial: TrialSpec) -> ExperimentSpec:
    """The resolved spec ``trial`` trains under: the experiment's with its trial overrides.

    Scaling and augmentation trials (and their retrained copies) change the task: image size,
    head, augmentation policy (``task_overrides``); a retraining on new data changes the data
    (``data_overrides``). Everything that builds or trains a trial's model uses this spec.
    """
    if overrides := [*trial.task_overrides, *trial.data_overrides]:
        spec = spec.with_overrides(overrides)
    return spec.resolved()


def build_trial_model(spec: ExperimentSpec, trial: TrialSpec, official_task: Any) -> Any:
    """The trial's full model: its space's network inside its task's model.

    The architecture comes from the trial's ``arch_json`` alone, so a stored trial rebuilds without
    the search history.
    """
    import tf_keras

    task_kind = TASKS.get(spec.task.kind)
    input_specs = tf_keras.layers.InputSpec(shape=[None, *task_kind.input_shape(spec.task)])
    from kfnas.spaces.base import load_architecture  # Decodes only the space's own classes.

    arch = load_architecture(get_space(trial.space), trial.arch_json, f"trial {trial.trial_id}")

    def build() -> Any:
        network = get_space(trial.space).build_network(arch, spec.task, input_specs)
        return task_kind.build_model(official_task, network)

    return without_autograph(build, f"trial {trial.trial_id}'s model")


def best_evaluation(outcome: Any, metric: str, evaluations: int) -> dict[str, float]:
    """The final evaluation, or with several the best by ``metric`` and the step it came at.

    A NaN or infinite ``metric`` never beats a finite one (NaN compares false with everything, so
    a plain ``max`` would keep a NaN first evaluation); among ties the earliest wins.
    """
    if evaluations <= 1 or not outcome.evaluations:
        return dict(outcome.metrics)
    step, best = max(outcome.evaluations, key=lambda e: _finite_or_lowest(e[1].get(metric)))
    return {**best, "eval_step": float(step)}


def _finite_or_lowest(value: float | None) -> float:
    """``value`` when it is a finite number, else minus infinity (it then never wins)."""
    if value is None or not math.isfinite(value):
        return -math.inf
    return value
