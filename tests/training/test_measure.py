"""Model measurements against hand counts: parameters, multiply-adds, latency samples, memory."""

from __future__ import annotations

import statistics

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
