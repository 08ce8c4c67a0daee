"""The trial trainer: train, evaluate, checkpoint and log a tf-models-official task; measure models.

``train_and_evaluate`` (in ``trainer``) drives any ``official.core.base_task.Task`` for a step
budget and reports a ``TrainOutcome`` (COMPLETED, FAILED or INFEASIBLE, never an exception);
``evaluation`` runs one evaluation pass of a task; ``logs`` writes TensorBoard scalars and the
error log; ``measure`` counts parameters and multiply-adds and times batch-1 inference;
``checkpoints`` keeps a trial's checkpoints in the store so a rerun resumes. This package imports
TensorFlow (``checkpoints`` excepted: it moves files) but never kfp, PyGlove or google.cloud.

The names below load their module (and TensorFlow) on first use, so ``kfnas.training.checkpoints``
stays cheap for the steps that never train. To extend: training behaviour goes in ``trainer``, a new
model measurement in ``measure``; export a new name by adding it to ``_EXPORTS``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Evaluator": "evaluation",
    "scalar_logs": "evaluation",
    "LatencyMeasurement": "measure",
    "count_float_ops": "measure",
    "count_multiply_adds": "measure",
    "count_parameters": "measure",
    "measure_latency": "measure",
    "measure_latency_ms": "measure",
    "measure_memory_mb": "measure",
    "NonFiniteLossError": "trainer",
    "TrainOutcome": "trainer",
    "seed_everything": "trainer",
    "train_and_evaluate": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kfnas.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kfnas.training.{module}"), name)
