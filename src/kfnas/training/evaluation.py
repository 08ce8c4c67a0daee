"""One evaluation pass of a tf-models-official ``Task``, reported as plain floats.

``Evaluator`` runs ``task.validation_step`` over the validation data, feeds each
step's logs to ``task.aggregate_logs`` in the per-replica structure the official ``base_trainer``
uses, and ends with ``task.reduce_aggregated_logs``; the task's validation metrics and the mean
validation loss (``loss``) join the result. ``scalar_logs`` turns any such logs into
``{name: float}``. The trainer uses both; they work on their own too (e.g. to score a restored
checkpoint).

To extend: results that are not scalars (per-class arrays, images) are left out by
``scalar_logs``; report them from the task as separate scalar keys if they should be kept.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras


class Evaluator:
    """Evaluates ``model`` on ``task`` over ``data``; build once, call ``evaluate`` many times.

    Args:
        task: A configured ``official.core.base_task.Task``.
        model: The model to evaluate.
        data: What ``task.build_inputs(task.task_config.validation_data)`` returned.
        global_step: Handed to ``task.reduce_aggregated_logs`` (a variable or None).
    """

    #: Batches a pass runs eagerly before it traces the step: tracing a model's validation step
    #: costs about as much as this many eager batches on a CPU (~9 s for the demo's proxy model),
    #: so a small validation set (a proxy task's) is evaluated without tracing at all, and a large
    #: one traces once, after these batches.
    EAGER_BATCHES = 16

    def __init__(self, task: Any, model: tf_keras.Model, data: Any, global_step: Any = None):
        self.task, self.model, self.data, self.global_step = task, model, data, global_step
        self.report = ""  # What the task's evaluation printed, e.g. the COCO summary table.
        with contextlib.redirect_stdout(io.StringIO()):  # COCO prints as it loads annotations.
            self.metrics = tf.nest.flatten(task.build_metrics(training=False))
        self.loss = tf_keras.metrics.Mean("loss")
        self._step: Any = None
        self._traced = False

    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
        """One pass over the data (at most ``max_batches`` batches); the results as floats.

        Raises:
            ValueError: The data repeats forever and ``max_batches`` is None, or it is empty.
        """
        data = self.data
        if max_batches is not None:
            data = data.take(max_batches)
        elif is_infinite(data):
            raise ValueError(
                "the validation dataset repeats forever: make validation_data finite "
                "(is_training=False) or pass eval_steps"
            )
        if self._step is None:
            self._step = self._step_function()
        for metric in [self.loss, *self.metrics]:
            metric.reset_state()
        strategy = tf.distribute.get_strategy()
        state, batches = None, 0
        eager = self._step.python_function  # the same step, untraced
        for inputs in data:
            # Once traced (a pass longer than EAGER_BATCHES), every later batch uses the trace.
            self._traced = self._traced or batches >= self.EAGER_BATCHES
            logs = (self._step if self._traced else eager)(inputs)
            # The per-replica structure the official base_trainer hands to aggregate_logs.
            logs = tf.nest.map_structure(strategy.experimental_local_results, logs)
            state = self.task.aggregate_logs(state, logs)
            batches += 1
        if batches == 0:
            raise ValueError("the validation dataset yielded no batches")
        results: dict[str, Any] = {m.name: m.result() for m in self.metrics}
        if int(self.loss.count.numpy()) > 0:
            results["loss"] = self.loss.result()
        if state is not None:
            # COCO-style evaluators print their summary tables to stdout: keep them off the
            # console and available as ``report`` (the trainer writes it to the eval logs).
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                results.update(
                    self.task.reduce_aggregated_logs(state, global_step=self.global_step)
                )
            self.report = printed.getvalue()
        return scalar_logs(results)

    def _step_function(self) -> Any:
        task, model, loss, metrics = self.task, self.model, self.loss, self.metrics

        def step(inputs: Any) -> Any:
            logs = task.validation_step(inputs, model=model, metrics=metrics)
            if task.loss in logs:
                loss.update_state(logs[task.loss])
            return logs

        spec = getattr(self.data, "element_spec", None)
        if spec is not None:  # one trace, even for a smaller last batch
            return tf.function(step, input_signature=(spec,))
        return tf.function(step, reduce_retracing=True)


def scalar_logs(logs: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flattens ``logs`` to ``{name: float}``.

    Nested mappings become ``a/b``; scalars (tensors, NumPy values, numbers, or arrays of one
    element) are kept, everything else is left out. Values are not filtered: a NaN stays NaN.
    """
    out: dict[str, float] = {}
    for key, value in logs.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalar_logs(value, name + "/"))
            continue
        if isinstance(value, tf.Tensor | tf.Variable):
            value = value.numpy()
        try:
            array = np.asarray(value)
        except Exception:
            continue
        if array.size == 1 and array.dtype.kind in "biuf":
            out[name] = float(array.reshape(()))
    return out


def is_infinite(data: Any) -> bool:
    """Whether ``data`` is a ``tf.data.Dataset`` that repeats forever."""
    return isinstance(data, tf.data.Dataset) and int(data.cardinality()) == int(
        tf.data.INFINITE_CARDINALITY
    )
