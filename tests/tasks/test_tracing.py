"""Graphs built without AutoGraph where the code allows (``kfnas.tasks.tracing``)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf
import tf_keras

from kfnas.config.spec import BudgetSpec, TaskSpec
from kfnas.tasks import tracing
from kfnas.tasks.detection import DETECTION
from kfnas.tasks.tracing import without_autograph

pytestmark = pytest.mark.tf


def _mapped(fn):
    return without_autograph(lambda: tf.data.Dataset.range(4).map(fn), "the test data")


def test_code_that_branches_on_configs_is_traced_as_written():
    files: list[str] = []

    def scale(x):
        files.append(inspect.currentframe().f_code.co_filename)
        return x * 2 if files else x  # a Python branch on a Python value

    assert list(_mapped(scale).as_numpy_iterator()) == [0, 2, 4, 6]
    assert files == [__file__]  # not AutoGraph's converted copy


def test_code_that_branches_on_tensors_is_built_with_autograph(caplog):
    def clip(x):
        if x > 1:  # a tensor as a Python bool: needs AutoGraph
            return x * 0
        return x

    with caplog.at_level(logging.INFO, logger="kfnas.tasks.tracing"):
        values = list(_mapped(clip).as_numpy_iterator())
    assert values == [0, 1, 0, 0]
    assert "the test data needs AutoGraph" in caplog.text


def test_other_errors_are_raised():
    def broken(x):
        raise KeyError("not a tracing problem")

    with pytest.raises(KeyError, match="not a tracing problem"):
        _mapped(broken)


def test_detection_inputs_are_the_same_with_and_without_autograph(tmp_path, monkeypatch):
    """The saving changes no example: the same images, boxes and anchor targets, in order.

    (Augmentation draws are not repeatable run to run whichever way the parser is traced.)
    """
    from kfnas.data.synthetic import write_detection_dataset

    files = write_detection_dataset(tmp_path, num_train=8, num_validation=2)
    task = TaskSpec(
        num_classes=3,
        image_size=64,
        options={"min_level": 3, "max_level": 5, "aug_rand_hflip": False},
    )
    budget = BudgetSpec(train_steps=4, batch_size=4)
    official = DETECTION.build_task(task, files.data_spec(with_annotations=False), budget)

    official.task_config.train_data.seed = 3  # the same shuffle each time
    official.task_config.train_data.deterministic = True

    def batches(skip: bool) -> list:
        monkeypatch.setattr(tracing, "SKIP_AUTOGRAPH", skip)
        tf_keras.utils.set_random_seed(3)
        data = official.build_inputs(official.task_config.train_data)
        return [tf.nest.map_structure(np.asarray, b) for b in data.take(3)]

    plain, converted = batches(True), batches(False)
    for a, b in zip(plain, converted, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def _optimized_ops(run) -> list[str]:
    """The ops of the graphs the functions ``run`` calls ran as, after optimization."""
    from tensorflow.python.eager import context

    ctx = context.context()
    ctx.enable_run_metadata()
    try:
        run()
        metadata = ctx.export_run_metadata()
    finally:
        ctx.disable_run_metadata()
    return [n.op for g in metadata.function_graphs for n in g.post_optimization_graph.node]


def _conv_bias_relu() -> list[str]:
    """A new function's ops as it runs: Grappler fuses a convolution, its bias and ReLU on CPU."""
    x, kernel, bias = tf.ones([1, 4, 4, 2]), tf.ones([3, 3, 2, 3]), tf.ones([3])

    @tf.function
    def conv(x):
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))

    return _optimized_ops(lambda: conv(x))


def test_graphs_run_unoptimized_on_cpu_inside_the_block_only(monkeypatch):
    assert any("Fused" in op for op in _conv_bias_relu())  # Grappler's remapper at work
    with tracing.unoptimized_on_cpu() as off:
        ops = _conv_bias_relu()
    assert off  # this machine has no GPU
    assert {"Conv2D", "BiasAdd", "Relu"} <= set(ops) and not any("Fused" in op for op in ops)
    assert any("Fused" in op for op in _conv_bias_relu())  # as before once the block ends
    monkeypatch.setattr(tracing, "SKIP_GRAPPLER_ON_CPU", False)
    with tracing.unoptimized_on_cpu() as off:
        assert not off and any("Fused" in op for op in _conv_bias_relu())


def _swish_model() -> tf_keras.Model:
    """Swish by name, as official's layers ask for it: an ``Activation`` layer and a layer's own."""
    inputs = tf_keras.Input([3])
    hidden = tf_keras.layers.Dense(4, activation="swish", kernel_initializer="ones")(inputs)
    return tf_keras.Model(inputs, tf_keras.layers.Activation("silu")(hidden))


def _step_graph(model: tf_keras.Model, x: tf.Tensor) -> tuple[set[str], Any, Any]:
    """The op types of a training step's graph, and the step's outputs and gradients."""

    def step(x):
        with tf.GradientTape() as tape:
            y = model(x)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, model.trainable_variables)

    traced = tf.function(step).get_concrete_function(tf.TensorSpec(x.shape))
    return {op.type for op in traced.graph.get_operations()}, *traced(x)


def test_cpu_trials_build_swish_as_x_times_sigmoid_with_the_same_values_and_gradients(
    monkeypatch,
):
    x = tf.constant([[-3.0, 0.5, 2.0], [1.0, -0.25, 4.0]])
    kept, keras_y, keras_grads = _step_graph(_swish_model(), x)
    assert "IdentityN" in kept  # tf.nn.silu's custom gradient
    with tracing.plain_swish_on_cpu() as plain:
        model = _swish_model()
    assert plain  # this machine has no GPU
    ops, y, grads = _step_graph(model, x)  # built in the block: plain after it too
    assert "IdentityN" not in ops and "Sigmoid" in ops
    np.testing.assert_allclose(y, keras_y, rtol=1e-6)
    for grad, keras_grad in zip(grads, keras_grads, strict=True):
        np.testing.assert_allclose(grad, keras_grad, rtol=1e-5, atol=1e-6)
    assert model.layers[1].get_config()["activation"] == "swish"  # its config as Keras writes it
    assert "IdentityN" in _step_graph(_swish_model(), x)[0]  # Keras's own once the block ends
    monkeypatch.setattr(tracing, "PLAIN_SWISH_ON_CPU", False)
    with tracing.plain_swish_on_cpu() as plain:
        assert not plain and "IdentityN" in _step_graph(_swish_model(), x)[0]


#: Runs each worker's main with its trial stage replaced by a probe of the process's collector
#: and of the Python stacks its graph ops record.
WORKER_PROBE = """
import gc, json, sys
import tensorflow as tf
from kfnas.stages import measure_worker, worker
from kfnas.tasks import tracing

def state():
    graph = tf.function(lambda x: x + 1.0).get_concrete_function(tf.TensorSpec([])).graph
    return {
        "threshold": list(gc.get_threshold()),
        "frozen": gc.get_freeze_count(),
        "op_stack": max(len(op.traceback) for op in graph.get_operations()),
        "hint": tracing.op_tracebacks_hint(),
    }

seen = []

def probe(*args, **kwargs):
    seen.append(state())
    raise SystemExit(0)

worker.run_trial = measure_worker.measure_trial = probe
before = state()
for main, argv in ((worker.main, ["x", "proxy", "1"]), (measure_worker.main, ["x", "proxy", "1"])):
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps({"before": before, "seen": seen}))
"""


def _probe_workers(**env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_trial_and_measurement_workers_collect_garbage_less_often_and_skip_op_stacks():
    out = _probe_workers(KFNAS_OP_TRACEBACKS="0")
    assert out["before"]["threshold"] == [700, 10, 10]  # Python's defaults until main runs
    assert out["before"]["frozen"] == 0
    assert out["before"]["op_stack"] > 3 and out["before"]["hint"] == ""  # recorded until then
    assert len(out["seen"]) == 2  # both workers reached their stage
    for seen in out["seen"]:
        assert seen["threshold"] == list(tracing.GC_THRESHOLDS)
        assert seen["frozen"] > 10_000  # the imports: a full collection skips them
        assert seen["op_stack"] == 0
        assert "KFNAS_OP_TRACEBACKS=1" in seen["hint"]


def test_op_stacks_are_kept_when_the_environment_asks():
    out = _probe_workers(KFNAS_OP_TRACEBACKS="1")
    assert len(out["seen"]) == 2
    for seen in out["seen"]:
        assert seen["op_stack"] > 3 and seen["hint"] == ""
