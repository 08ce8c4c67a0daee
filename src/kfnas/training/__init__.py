"""The trial trainer: train, evaluate, checkpoint and log a tf-models-official task; measure models.

``train_and_evaluate`` (in ``trainer``) drives any ``official.core.base_task.Task`` for a step
budget and reports a ``TrainOutcome`` (COMPLETED, FAILED or INFEASIBLE, never an exception);
``evaluation`` runs one evaluation pass of a task; ``logs`` writes TensorBoard scalars and the
error log; ``measure`` counts parameters and multiply-adds and times batch-1 inference. This
package imports TensorFlow but never kfp, PyGlove or google.cloud: it only sees the paths it is
handed.

To extend: training behaviour goes in ``trainer``, a new model measurement in ``measure``.
"""

from __future__ import annotations

from kfnas.training.evaluation import Evaluator, scalar_logs
from kfnas.training.measure import (
    LatencyMeasurement,
    count_float_ops,
    count_multiply_adds,
    count_parameters,
    measure_latency,
    measure_latency_ms,
    measure_memory_mb,
)
from kfnas.training.trainer import (
    NonFiniteLossError,
    TrainOutcome,
    seed_everything,
    train_and_evaluate,
)

__all__ = [
    "Evaluator",
    "LatencyMeasurement",
    "NonFiniteLossError",
    "TrainOutcome",
    "count_float_ops",
    "count_multiply_adds",
    "count_parameters",
    "measure_latency",
    "measure_latency_ms",
    "measure_memory_mb",
    "scalar_logs",
    "seed_everything",
    "train_and_evaluate",
]
