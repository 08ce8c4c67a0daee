"""Model measurements against hand counts: parameters, multiply-adds, latency samples, memory."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
from kfnas.training import (  # noqa: E402
    count_float_ops,
    count_multiply_adds,
    count_parameters,
    measure_latency,
    measure_latency_ms,
    measure_memory_mb,
)
from kfnas.training.measure import (  # noqa: E402
    LatencyMeasurement,
    convert_to_tflite,
    measure_tflite_latency,
    trace_inference,
)
from kfnas.training.stats import timed_calls  # noqa: E402

pytestmark = pytest.mark.tf


def built(input_shape: tuple[int, ...], *layers: tf_keras.layers.Layer) -> tf_keras.Model:
    model = tf_keras.Sequential(list(layers))
    model.build((None, *input_shape))
    return model


def test_parameters_match_a_hand_count() -> None:
    dense = built((10,), tf_keras.layers.Dense(5), tf_keras.layers.Dense(2))
    assert count_parameters(dense) == (10 * 5 + 5) + (5 * 2 + 2)
    conv = built(
        (8, 8, 3),
        tf_keras.layers.Conv2D(8, 3),
        tf_keras.layers.BatchNormalization(),
    )
    conv_weights = 3 * 3 * 3 * 8 + 8
    assert count_parameters(conv) == conv_weights + 4 * 8  # gamma, beta, moving mean and var
    assert count_parameters(conv, trainable_only=True) == conv_weights + 2 * 8


def test_an_unbuilt_model_is_built_from_the_input_shape() -> None:
    with pytest.raises(ValueError, match="not built: pass input_shape"):
        count_parameters(tf_keras.Sequential([tf_keras.layers.Dense(5)]))
    model = tf_keras.Sequential([tf_keras.layers.Dense(5)])
    assert count_parameters(model, (10,)) == 10 * 5 + 5


def test_multiply_adds_of_a_dense_layer() -> None:
    assert count_multiply_adds(built((10,), tf_keras.layers.Dense(5, use_bias=False)), (10,)) == 50
    # The bias adds are 5 FLOPs: half a multiply-add each, rounded down.
    with_bias = built((10,), tf_keras.layers.Dense(5))
    assert count_float_ops(with_bias, (10,)) == 2 * 50 + 5
    assert count_multiply_adds(with_bias, (10,)) == 52


def test_multiply_adds_of_a_conv_layer_at_batch_one() -> None:
    conv = built((None, None, 3), tf_keras.layers.Conv2D(8, 3, padding="same", use_bias=False))
    # Each of the 8x8x8 outputs takes 3x3x3 multiply-adds; the model's batch and size are free.
    assert count_multiply_adds(conv, (8, 8, 3)) == 8 * 8 * 8 * (3 * 3 * 3)
    assert count_multiply_adds(conv, (16, 16, 3)) == 16 * 16 * 8 * (3 * 3 * 3)


def test_latency_is_the_median_of_the_timed_runs() -> None:
    model = built((16, 16, 3), tf_keras.layers.Conv2D(4, 3), tf_keras.layers.Flatten())
    result = measure_latency(model, (16, 16, 3), warmup=2, runs=7)
    assert len(result.samples_ms) == 7
    assert all(sample > 0 for sample in result.samples_ms)
    assert result.median_ms == statistics.median(result.samples_ms)
    assert "CPU" in result.device or "GPU" in result.device
    assert measure_latency_ms(model, (16, 16, 3), warmup=0, runs=1) > 0
    with pytest.raises(ValueError, match="runs >= 1"):
        measure_latency(model, (16, 16, 3), runs=0)


def test_latency_runs_the_model_in_inference_mode() -> None:
    calls: list[bool] = []

    class Probe(tf_keras.Model):
        def call(self, inputs, training=None):
            calls.append(training)
            return inputs * 2.0

    measure_latency(Probe(), (4,), warmup=1, runs=3)
    assert calls == [False]  # traced once, with training=False


def test_memory_is_none_without_a_gpu_and_positive_with_one() -> None:
    model = built((16, 16, 3), tf_keras.layers.Conv2D(4, 3))
    memory = measure_memory_mb(model, (16, 16, 3))
    if tf.config.list_logical_devices("GPU"):
        assert memory is not None and memory > 0
    else:
        assert memory is None


def test_timed_calls_time_at_least_runs_calls_and_at_least_min_seconds() -> None:
    calls: list[float] = []

    def call() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.01)

    began = time.perf_counter()
    samples = timed_calls(call, 3, min_seconds=0.2)
    assert time.perf_counter() - began >= 0.2
    assert len(samples) == len(calls) > 3
    assert all(sample >= 10.0 for sample in samples)  # milliseconds, each call on its own
    assert calls[-1] - began < 0.2  # the last call started inside the window: no extra one
    assert len(timed_calls(call, 3)) == 3
    assert len(timed_calls(lambda: None, 5, min_seconds=0.0)) == 5


def test_latency_spread_is_computed_from_the_samples() -> None:
    samples = [4.0, 1.0, 3.0, 2.0, 10.0]
    result = LatencyMeasurement.from_samples(samples, "/CPU:0", batch_size=8)
    assert result.samples_ms == tuple(samples)
    assert result.median_ms == 3.0
    assert result.p90_ms == float(np.percentile(samples, 90)) == pytest.approx(7.6)
    assert result.mean_ms == 4.0
    assert result.stdev_ms == pytest.approx(statistics.stdev(samples))
    assert result.cv == pytest.approx(statistics.stdev(samples) / 4.0)
    assert (result.min_ms, result.max_ms, result.batch_size) == (1.0, 10.0, 8)
    assert result.stats(2) == {
        "median_ms": 3.0,
        "p90_ms": 7.6,
        "mean_ms": 4.0,
        "stdev_ms": round(statistics.stdev(samples), 2),
        "cv": round(statistics.stdev(samples) / 4.0, 2),
        "min_ms": 1.0,
        "max_ms": 10.0,
        "runs": 5,
    }
    single = LatencyMeasurement((5.0,), 5.0, "/CPU:0")  # the old constructor still works
    assert (single.stdev_ms, single.cv, single.p90_ms, single.batch_size) == (0.0, 0.0, 5.0, 1)
    with pytest.raises(ValueError, match="at least one timed call"):
        LatencyMeasurement.from_samples([], "/CPU:0")


def test_latency_at_a_batch_size_and_from_a_traced_function() -> None:
    calls: list[bool] = []

    class Probe(tf_keras.Model):
        def call(self, inputs, training=None):
            calls.append(training)
            return inputs * 2.0

    model = Probe()
    result = measure_latency(model, (4,), warmup=1, runs=3, batch_size=4)
    assert (result.batch_size, len(result.samples_ms)) == (4, 3)
    assert result.p90_ms >= result.median_ms >= result.min_ms > 0
    concrete = trace_inference(model, (4,))
    assert measure_latency(model, (4,), warmup=1, runs=2, concrete=concrete).batch_size == 1
    assert calls == [False, False]  # batch 4, then batch 1 once: the given function is reused
    with pytest.raises(ValueError, match=r"traced for input shape \[1, 4\], not \[2, 4\]"):
        measure_latency(model, (4,), runs=1, batch_size=2, concrete=concrete)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        measure_latency(model, (4,), runs=1, batch_size=0)


def test_a_tflite_model_is_timed_with_the_interpreter() -> None:
    model = built((10,), tf_keras.layers.Dense(5))
    concrete = trace_inference(model, (10,))
    with pytest.raises(ValueError, match="'float' or 'int8', got 'int4'"):
        convert_to_tflite(concrete, model, "int4")
    flatbuffer = convert_to_tflite(concrete, model, "float")
    assert isinstance(flatbuffer, bytes) and flatbuffer
    result = measure_tflite_latency(flatbuffer, warmup=1, runs=4, threads=1)
    assert len(result.samples_ms) == 4 and result.median_ms > 0
    assert (result.device, result.batch_size) == ("tflite:CPU", 1)


class _NestedMatmul(tf_keras.layers.Layer):
    """A dense layer whose matmul runs inside a nested ``tf.function`` (a function call op)."""

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]), 5))

    def call(self, inputs: Any) -> Any:
        return tf.function(lambda x: tf.matmul(x, self.kernel))(inputs)


def test_multiply_adds_inside_a_function_call_are_counted() -> None:
    # The traced graph holds a call of the nested function; its matmul still counts.
    assert count_multiply_adds(built((10,), _NestedMatmul()), (10,)) == 50
