"""Measuring a trained trial's model and scoring it: the measurement step's TensorFlow half.

A trial's pod trains and evaluates (``runner.execute_trial(measure=False)`` gives a
``TrialTraining``); the measurement step (``kfnas.stages.measure``) rebuilds the model on the
latency device from the trial's checkpoint (``restore_trial_model``), measures it by the fixed
protocol (``measure_trial_model``: ``kfnas.training.protocol``) and folds the measurement and the
training into the trial's ``TrialResult`` with its reward (``score_trial``). A trial run in one
process (``execute_trial(measure=True)``: ``kfnas trial``, tests) measures its in-memory model
the same way.

To measure something more: add it to ``kfnas.training.protocol``; to let a constraint target it,
add its metric name to ``kfnas.config.spec.CONSTRAINT_MEASURES``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from kfnas.config.spec import (
    ENV_LATENCY_DEVICE,
    ENV_LATENCY_THREADS,
    LOCAL_DEVICE,
    BudgetSpec,
    ExperimentSpec,
)
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus, TrialTraining
from kfnas.search.rewards import RewardError, compute_reward, objective_vector
from kfnas.spaces import declared_options, get_space
from kfnas.tasks import TASKS
from kfnas.training.stats import trial_protocol

#: Intra-op threads a local measurement pins (inter-op: 1). One: a batch-1 call of a small model
#: is a chain of small ops, which more threads only hand to each other. On a 2-core virtual
#: machine the demo's proxy model took 18 ms at one thread and 32 ms at two (each op's work
#: split, ~500 context switches a call), and at two threads 100-call blocks within one process
#: varied by up to 23 % against 2.5 % at one. Unpinned, TensorFlow also runs ops side by side.
LOCAL_THREADS = 1


def latency_device() -> tuple[str, int]:
    """The device this process measures on and the threads to pin, from its environment.

    ``KFNAS_LATENCY_DEVICE`` (the cluster profile's ``latency.device``; ``local`` when unset) and
    ``KFNAS_LATENCY_THREADS`` (when unset: one thread on a local machine, ``LOCAL_THREADS``;
    elsewhere 0, TensorFlow's default).

    Raises:
        ValueError: ``KFNAS_LATENCY_THREADS`` is not a whole number >= 0.
    """
    device = os.environ.get(ENV_LATENCY_DEVICE, "").strip() or LOCAL_DEVICE
    threads = os.environ.get(ENV_LATENCY_THREADS, "").strip()
    if not threads:
        return device, LOCAL_THREADS if device == LOCAL_DEVICE else 0
    if not threads.isdigit():
        raise ValueError(
            f"{ENV_LATENCY_THREADS} must be a whole number of threads (0: unpinned), got "
            f"{threads!r}: fix steps.latency.threads of the cluster profile"
        )
    return device, int(threads)


def restore_trial_model(spec: ExperimentSpec, trial: TrialSpec, checkpoint_dir: str | Path) -> Any:
    """The trial's model rebuilt outside any distribution, with its trained weights.

    Args:
        spec: The resolved spec the trial trained under (``runner.trial_experiment_spec``).
        trial: The trial.
        checkpoint_dir: A local copy of the trial's ``model/`` folder.

    Raises:
        FileNotFoundError: The folder holds no checkpoint.
    """
    import tensorflow as tf

    from kfnas.training.runner import build_trial_model

    task_kind = TASKS.get(spec.task.kind)
    space_options = declared_options(spec.task.kind, [get_space(trial.space)])
    official_task = task_kind.build_task(
        spec.task, spec.data, BudgetSpec(**trial.budget), space_options
    )
    model = build_trial_model(spec, trial, official_task)
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint in {checkpoint_dir}: the trial's model/ folder was not uploaded; "
            f"run the trial again"
        )
    tf.train.Checkpoint(model=model).read(latest).expect_partial()
    model(tf.zeros([1, *task_kind.input_shape(spec.task)]), training=False)  # restores all
    return model


def release_models() -> None:
    """Frees what the models restored in this process so far left behind.

    Keras's global state (``clear_session``) and the garbage of their objects. A process that
    measures many models (the local measurement worker) calls it after each. It frees only part:
    measuring 8 demo models in one process grew its peak memory by ~50 MB a model, ~42 MB with
    this after each (``benchmarks/measurement_worker_memory.py``); the rest stays with
    TensorFlow until the process exits, which is why the worker also hands over to a fresh one
    after ``kfnas.launch.base.MEASUREMENTS_PER_WORKER`` models.
    """
    import gc

    import tf_keras

    tf_keras.backend.clear_session()
    gc.collect()


def measure_trial_model(
    spec: ExperimentSpec,
    trial: TrialSpec,
    model: Any,
    *,
    threads: int = 0,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
    known: Any = None,
) -> Any:
    """Measures the trial's model by the protocol (``kfnas.training.protocol.measure_model``).

    The trial's ``budget.latency_runs`` timed calls per latency, the spec's
    ``measurement.batch_sizes`` and ``measurement.tflite``; what is timed is the task kind's
    ``measured_model`` (detection: the network without non-maximum suppression). ``known``: the
    protocol's ``KnownMeasurements`` to reuse and add to (None: always measure).

    Returns:
        The ``ModelMeasurement``.
    """
    from kfnas.training.protocol import measure_model

    task_kind = TASKS.get(spec.task.kind)
    measured = getattr(task_kind, "measured_model", None)  # optional (``TaskKind``)
    return measure_model(
        measured(model) if measured else model,
        **trial_protocol(spec, trial),
        threads=threads,
        exclusive=exclusive,
        known=known,
    )


def measure_stored_trial(
    spec: ExperimentSpec,
    trial: TrialSpec,
    model_dir: str | Path,
    *,
    threads: int = 0,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
    known: Any = None,
) -> Any:
    """The TensorFlow framework's measurer (``kfnas.tasks.frameworks``): prepare, restore, measure.

    Prepares the process first (``prepare_measurement``: the BFC CPU allocator and the pinned
    threads, before TensorFlow runs anything in this process), rebuilds the
    trial's model from the checkpoint in ``model_dir`` and measures it by the protocol, reusing
    a measurement in ``known`` of a model that computes the same (``measure_trial_model``).

    Returns:
        The ``ModelMeasurement``.
    """
    from kfnas.training.protocol import prepare_measurement

    prepare_measurement(threads)
    model = restore_trial_model(spec, trial, model_dir)
    return measure_trial_model(
        spec, trial, model, threads=threads, exclusive=exclusive, known=known
    )


def score_trial(
    spec: ExperimentSpec,
    training: TrialTraining,
    measured: Any,
    *,
    device: str,
    seconds: float = 0.0,
) -> TrialResult:
    """The trial's result: its training's metrics, the measurement's and the reward.

    A TensorFlow Lite measurement that failed is recorded in ``measurement``; when a constraint
    needs it, the trial is FAILED with the conversion error, unless the spec's
    ``measurement.tflite_fallback`` lets the constraint use the TensorFlow latency (recorded as
    ``measurement.fallback``).

    Args:
        spec: The resolved spec the trial trained under.
        training: Its training record.
        measured: The ``ModelMeasurement`` of its model.
        device: The latency device it was measured on.
        seconds: How long the measurement took (building and restoring the model included).
    """
    metrics = {**training.metrics, **measured.metrics}
    record = {
        **measured.record,
        "device": device,  # the latency device's name; TensorFlow's own device string beside it
        "tf_device": measured.record.get("device", ""),
        "errors": dict(measured.errors),
    }
    if seconds:
        record["total_seconds"] = round(seconds, 3)
    fallback = {}
    for constraint in spec.objectives.constraints:
        measure = constraint.measure
        mode = measure.removeprefix("tflite_").removesuffix("_latency_ms")
        error = measured.errors.get(f"tflite_{mode}") if measure.startswith("tflite_") else None
        if error is None or measure in metrics:
            continue
        if not spec.measurement.tflite_fallback:
            return training.result(
                TrialStatus.FAILED,
                metrics=_finite(metrics),
                error=(
                    f"TensorFlow Lite {mode} conversion failed, and the constraint on {measure} "
                    f"needs it: {error}. Change the model's unsupported ops, or set "
                    f"measurement.tflite_fallback: true to use the TensorFlow latency instead"
                ),
                measurement=record,
            )
        metrics[measure] = metrics["latency_ms"]
        fallback[measure] = "latency_ms"
    if fallback:
        record["fallback"] = fallback
    try:
        reward = compute_reward(metrics, spec.objectives)
        objectives = objective_vector(metrics, spec.objectives)
    except RewardError as e:
        return training.result(
            TrialStatus.FAILED, metrics=_finite(metrics), error=f"reward: {e}", measurement=record
        )
    return training.result(
        TrialStatus.COMPLETED,
        metrics=_finite(metrics),
        reward=reward,
        objectives=objectives,
        measurement=record,
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """A metric with no value (NaN, e.g. an evaluator's empty category) is left out."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
