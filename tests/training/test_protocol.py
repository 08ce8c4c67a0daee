"""The fixed measurement protocol: warm-up excluded, spread reported, exclusive timing, TFLite."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
from kfnas.training import measure  # noqa: E402
from kfnas.training.protocol import (  # noqa: E402
    ENV_CPU_BFC,
    ERROR_CHARS,
    cpu_allocator,
    measure_model,
    pin_threads,
)

pytestmark = pytest.mark.tf

WARMUP_SLEEP_MS = 150.0


def built(input_shape: tuple[int, ...], *layers: tf_keras.layers.Layer) -> tf_keras.Model:
    model = tf_keras.Sequential(list(layers))
    model.build((None, *input_shape))
    return model


class PyCall(tf_keras.layers.Layer):
    """Identity through ``tf.py_function``: runs ``on_call`` each time the model executes."""

    def __init__(self, on_call: Callable[[], None]) -> None:
        super().__init__()
        self.on_call = on_call

    def call(self, inputs: Any) -> Any:
        def run(x: Any) -> Any:
            self.on_call()
            return x

        outputs = tf.py_function(run, [inputs], tf.float32)
        outputs.set_shape(inputs.shape)
        return outputs


class Spy:
    """Logs calls of ``kfnas.training.measure`` functions, each with whether it ran exclusively.

    ``exclusive`` is the factory to hand ``measure_model``; it logs its own enters and exits.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
        self.events: list[tuple[str, bool]] = []
        self.inside = False
        self.results: dict[str, list[Any]] = {name: [] for name in names}
        for name in names:
            monkeypatch.setattr(measure, name, self._wrap(name, getattr(measure, name)))

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.events.append((name, self.inside))
            result = function(*args, **kwargs)
            self.results[name].append(result)
            return result

        return wrapper

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        assert not self.inside, "exclusive() entered twice at once"
        self.events.append(("enter", False))
        self.inside = True
        try:
            yield
        finally:
            self.inside = False
            self.events.append(("exit", True))


def test_warmup_calls_are_excluded_and_the_median_and_p90_are_of_the_timed_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = 10
    warmup = max(5, runs // 5)  # the protocol's default
    timed_ms = [2.0 * (i + 1) for i in range(runs)]
    random.Random(0).shuffle(timed_ms)
    plan = [WARMUP_SLEEP_MS] * warmup + timed_ms
    slept: list[float] = []
    armed = False

    def sleep() -> None:  # sleeps by plan only inside the exclusive section (the timed parts)
        if armed:
            duration = plan[len(slept)]
            slept.append(duration)
            time.sleep(duration / 1000.0)

    @contextlib.contextmanager
    def exclusive() -> Iterator[None]:
        nonlocal armed
        armed = True
        yield
        armed = False

    spy = Spy(monkeypatch, ["measure_latency"])
    result = measure_model(built((4,), PyCall(sleep)), (4,), runs=runs, exclusive=exclusive)

    assert slept == plan  # every warm-up and timed call ran, in order
    (latency,) = spy.results["measure_latency"]
    samples = np.array(latency.samples_ms)
    assert len(samples) == runs
    # Each timed call lasted at least its planned sleep, and none is one of the slow warm-ups.
    assert np.all(samples >= np.array(timed_ms))
    assert samples.max() < WARMUP_SLEEP_MS
    assert result.metrics["latency_ms"] == float(np.median(samples))
    assert result.metrics["latency_p90_ms"] == float(np.percentile(samples, 90))
    # Planned: median 11 ms, 90th percentile 18.2 ms; the rest is call overhead.
    assert 11.0 <= result.metrics["latency_ms"] < 11.0 + 30.0
    assert 18.2 <= result.metrics["latency_p90_ms"] < 18.2 + 30.0
    assert result.metrics["latency_cv"] == pytest.approx(np.std(samples, ddof=1) / samples.mean())
    assert result.record["protocol"] == {
        "warmup": warmup,
        "runs": runs,
        "min_seconds": 0.0,
        "threads": 0,
        "batch_sizes": [1],
    }
    stats = result.record["latency"]["1"]
    assert stats["median_ms"] == round(float(np.median(samples)), 4)
    assert stats["min_ms"] == round(float(samples.min()), 4)
    assert stats["max_ms"] == round(float(samples.max()), 4)


def test_timed_parts_go_on_until_min_seconds_have_passed() -> None:
    call_ms = 20.0
    model = built((4,), PyCall(lambda: time.sleep(call_ms / 1000.0)))
    result = measure_model(model, (4,), runs=3, warmup=1, batch_sizes=[2], min_seconds=0.3)

    assert result.record["protocol"]["min_seconds"] == 0.3
    for size in ("1", "2"):
        stats = result.record["latency"][size]
        # 3 calls would take ~60 ms: the calls went on until 0.3 s had passed, and then stopped.
        assert 300.0 / stats["max_ms"] <= stats["runs"] <= 300.0 / call_ms + 1
        assert stats["median_ms"] >= call_ms
    exact = measure_model(model, (4,), runs=3, warmup=1, min_seconds=0.0)
    assert exact.record["latency"]["1"]["runs"] == 3
    # The window is part of the protocol: the two measurements are not interchangeable.
    assert exact.record["key"] != result.record["key"]


@pytest.mark.parametrize("bad", [-0.5, float("nan")])
def test_a_negative_window_is_refused_before_anything_is_measured(bad: float) -> None:
    model = built((4,), tf_keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"min_seconds must be 0 \(exactly `runs` timed calls\)"):
        measure_model(model, (4,), runs=3, min_seconds=bad)


def test_exclusive_is_entered_only_around_the_timed_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = Spy(
        monkeypatch,
        [
            "count_parameters",
            "trace_inference",
            "count_multiply_adds",
            "measure_memory_mb",
            "convert_to_tflite",
            "measure_latency",
            "measure_tflite_latency",
        ],
    )
    model = built((10,), tf_keras.layers.Dense(5))
    result = measure_model(
        model, (10,), runs=3, warmup=1, batch_sizes=[2], tflite=["float"], exclusive=spy.exclusive
    )

    assert result.errors == {}
    untimed = [
        ("count_parameters", False),
        ("trace_inference", False),  # batch 1: shared by FLOPs, memory, TFLite and latency
        ("count_multiply_adds", False),
        ("measure_memory_mb", False),
        ("trace_inference", False),  # batch 2, traced before its timed part
        ("convert_to_tflite", False),
    ]
    timed = [
        ("enter", False),
        ("measure_latency", True),
        ("exit", True),
        ("enter", False),
        ("measure_latency", True),
        ("exit", True),
        ("enter", False),
        ("measure_tflite_latency", True),
        ("exit", True),
    ]
    assert spy.events == untimed + timed
    batch1, batch2 = spy.results["measure_latency"]
    assert (batch1.batch_size, batch2.batch_size) == (1, 2)
    assert result.record["seconds"].keys() == {"count", "convert", "timed"}


def test_metrics_of_a_dense_model_match_hand_counts() -> None:
    calls: list[bool] = []

    class Probe(tf_keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = tf_keras.layers.Dense(5)

        def call(self, inputs: Any, training: bool | None = None) -> Any:
            calls.append(training)
            return self.dense(inputs)

    model = Probe()
    model.build((None, 10))  # builds by calling the model (training=None)
    calls.clear()
    result = measure_model(model, (10,), runs=5, warmup=1, batch_sizes=[4, 4, 1])

    assert calls == [False, False]  # traced once at batch 1 and once at batch 4, for inference
    assert result.metrics["params"] == 10 * 5 + 5
    assert result.metrics["flops"] == 52  # (2 * 50 multiply-adds + 5 bias adds) FLOPs // 2
    assert result.metrics["latency_ms"] > 0
    assert result.metrics["latency_p90_ms"] >= result.metrics["latency_ms"]
    assert result.metrics["latency_ms_b4"] > 0
    assert result.metrics["latency_p90_ms_b4"] >= result.metrics["latency_ms_b4"]
    assert ("memory_mb" in result.metrics) == bool(tf.config.list_logical_devices("GPU"))
    assert result.errors == {}
    record = json.loads(json.dumps(result.record))  # JSON-ready as it is
    assert record["protocol"]["batch_sizes"] == [1, 4]
    assert record["protocol"]["warmup"] == 1
    assert set(record["latency"]) == {"1", "4"}
    assert record["latency"]["4"].keys() == {
        "median_ms",
        "p90_ms",
        "mean_ms",
        "stdev_ms",
        "cv",
        "min_ms",
        "max_ms",
        "runs",
    }
    assert record["latency"]["4"]["runs"] == 5
    assert record["tensorflow"] == tf.__version__
    assert "CPU" in record["device"] or "GPU" in record["device"]
    assert record["tflite"] == {}
    # This test process did not prepare itself as a measurement worker does.
    assert record["cpu_allocator"] == cpu_allocator()


def test_tflite_float_and_int8_are_converted_and_timed() -> None:
    model = built(
        (16, 16, 3),
        tf_keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        tf_keras.layers.Conv2D(32, 3),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(10),
    )
    result = measure_model(model, (16, 16, 3), runs=5, warmup=1, tflite=["float", "int8"])

    assert result.errors == {}
    metrics = result.metrics
    for mode in ("float", "int8"):
        assert metrics[f"tflite_{mode}_latency_ms"] > 0
        assert metrics[f"tflite_{mode}_latency_p90_ms"] >= metrics[f"tflite_{mode}_latency_ms"]
        assert result.record["tflite"][mode]["size_kb"] == round(
            metrics[f"tflite_{mode}_size_kb"], 4
        )
    # Dynamic-range quantization stores the weights in int8: about a quarter of float32.
    assert metrics["tflite_int8_size_kb"] < 0.5 * metrics["tflite_float_size_kb"]
    json.dumps(result.record)


def test_a_model_tflite_cannot_convert_records_the_error_and_keeps_the_tf_latency() -> None:
    model = built((4,), PyCall(lambda: None))
    with pytest.raises(Exception, match="EagerPyFunc"):  # TFLite has no kernel for py_function
        measure.convert_to_tflite(measure.trace_inference(model, (4,)), model, "float")

    result = measure_model(model, (4,), runs=3, warmup=1, tflite=["float"])

    error = result.errors["tflite_float"]
    assert error.startswith("ConverterError: ")
    assert "EagerPyFunc" in error
    assert len(error) <= len("ConverterError: ") + ERROR_CHARS
    assert result.record["tflite"] == {"float": {"error": error}}
    assert result.metrics["latency_ms"] > 0
    assert not any(name.startswith("tflite_") for name in result.metrics)


def test_bad_batch_sizes_and_modes_are_refused() -> None:
    model = built((4,), tf_keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"batch_sizes must be at least 1, got 0 in \[8, 0\]"):
        measure_model(model, (4,), runs=3, batch_sizes=[8, 0])
    with pytest.raises(ValueError, match="'int4' is not one of float, int8"):
        measure_model(model, (4,), runs=3, tflite=["int4"])
    with pytest.raises(ValueError, match="runs >= 1"):
        measure_model(model, (4,), runs=0)


def test_a_measurement_process_pins_threads_and_the_bfc_allocator_before_tensorflow_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_CPU_BFC}
    script = (
        "import tensorflow as tf\n"
        "from kfnas.training.protocol import cpu_allocator, prepare_measurement\n"
        "pinned = prepare_measurement(3)\n"
        "tf.constant(1.0) + 1.0\n"
        "print(pinned, tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads(), cpu_allocator())\n"
    )

    def fresh(**extra: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.split()

    assert fresh() == ["True", "3", "1", "bfc"]
    assert fresh(**{ENV_CPU_BFC: "false"}) == ["True", "3", "1", "default"]  # the user's say

    tf.constant(1.0) + 1.0  # this process's TensorFlow is running
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    with caplog.at_level(logging.WARNING, logger="kfnas.training.protocol"):
        assert pin_threads(intra + 7) is False
    assert "cannot pin TensorFlow to" in caplog.text
    assert tf.config.threading.get_intra_op_parallelism_threads() == intra
    assert pin_threads(0) is True  # nothing asked for


class Known:
    """``KnownMeasurements`` in a dict, counting what was asked and stored."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] = {}
        self.asked: list[str] = []

    def get(self, key: str) -> Any:
        self.asked.append(key)
        return self.stored.get(key)

    def put(self, key: str, measured: Any) -> None:
        self.stored.setdefault(key, measured)


def test_a_model_that_computes_the_same_reuses_the_measurement_untimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = Known()
    first = measure_model(built((6,), tf_keras.layers.Dense(4)), (6,), runs=3, known=known)
    (key,) = known.stored
    assert known.stored[key] is first and first.record["key"] == key
    # Another model of the same architecture (other weights): the stored measurement, nothing
    # timed and no FLOPs counted; the protocol's settings are part of the key.
    spy = Spy(monkeypatch, ["measure_latency", "count_multiply_adds"])
    again = built((6,), tf_keras.layers.Dense(4))
    assert measure_model(again, (6,), runs=3, known=known, exclusive=spy.exclusive) is first
    assert spy.events == []
    other = measure_model(again, (6,), runs=4, known=known)  # another protocol: measured
    wider = measure_model(built((6,), tf_keras.layers.Dense(5)), (6,), runs=3, known=known)
    assert len({first.record["key"], other.record["key"], wider.record["key"]}) == 3
    assert len(known.stored) == 3 and len(known.asked) == 4
