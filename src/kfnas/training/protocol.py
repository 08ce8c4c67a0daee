"""The fixed protocol every model measurement follows: what is measured, in which order, how.

A trial's latency is measured by the measurement step on the latency device, one model at a time,
never inside the training trial, so that every model of an experiment is timed the same way.
``measure_model`` is that protocol:

1. The untimed parts, in this order: parameters (``count_parameters``), multiply-adds
   (``count_multiply_adds``), peak GPU memory (``measure_memory_mb``, only when a GPU exists),
   the TensorFlow Lite conversions. The model is traced ONCE at batch 1 in inference mode
   (``trace_inference``); that one function serves FLOPs, memory, conversion and batch-1 latency.
2. The timed parts, each inside ``exclusive()`` when given (the local launcher pauses the other
   trials while it is entered; nothing untimed runs inside it): batch-1 latency, each extra batch
   size, each converted TensorFlow Lite model. Each is ``warmup`` untimed calls, then ``runs``
   timed ones, and more until ``min_seconds`` have passed (``kfnas.training.stats.timed_calls``:
   this machine's speed drifts over seconds, so a median over a few seconds is steadier than one
   over a burst); the reported latency is the median, with the 90th percentile and the
   coefficient of variation beside it, and the record has the timed calls' count (``runs``).

The process is prepared (``prepare_measurement``) before TensorFlow executes anything, so the
measurement worker calls it first thing in a fresh process: it pins the threads
(``pin_threads``) and selects TensorFlow's BFC CPU allocator, which keeps its buffers from one
call to the next. With TensorFlow's default allocator the same model's batch-1 timing drifted
within a process and between processes (the demo's proxy model, one thread, 5 fresh processes
of 1,000 calls on a 2-core virtual machine: the medians of their first 100 calls varied by a CV
of 16.5 %, of all 1,000 by 6.1 %, and 100-call blocks within one process by up to 14 %; with BFC
2.2 %, 1.9 % and at most 2.5 %; the time was all user time, not page faults or waiting).
``measure_model`` records the thread settings and the allocator in effect.

Reuse: a caller may pass ``known`` (``KnownMeasurements``). After the batch-1 trace the model's
``measurement_key`` is computed: the digest of what it computes
(``kfnas.training.fingerprint.inference_fingerprint``: ops, wiring, weight shapes, not names or
weight values) and of this protocol's settings (runs, warm-up, batch sizes, TensorFlow Lite modes,
threads, allocator, TensorFlow version, devices). When ``known`` has a measurement under that
key, it is returned as it is, with nothing timed: the same architecture trained again (a
validation or final training of a proxy trial) gets the same latency, FLOPs and parameters
instead of a second sample of the device's noise. A new measurement is handed to ``known.put``.
The record carries the key (``key``) either way.

A model that TensorFlow Lite cannot convert (or whose TFLite model the interpreter refuses) does
not fail the measurement: the error goes to ``ModelMeasurement.errors`` and the record, and the
TensorFlow measurements stand. Any other failure raises.

To extend: add the measurement's primitive to ``kfnas.training.measure`` (unit in its name), call
it here in the untimed or the timed part (a timed one inside ``guard()``), put its value in
``metrics`` under a name a constraint may target (and add that name to
``kfnas.config.spec.CONSTRAINT_MEASURES``) and its details in ``record``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tensorflow as tf

from kfnas.training import measure
from kfnas.training.fingerprint import inference_fingerprint
from kfnas.training.stats import ModelMeasurement, protocol_arguments

log = logging.getLogger(__name__)

#: The most characters of an error message a measurement keeps.
ERROR_CHARS = 500
#: The most lines of an error message a measurement keeps.
ERROR_LINES = 5
#: Decimals of the floats in ``ModelMeasurement.record``.
RECORD_DIGITS = 4
#: TensorFlow's switch to its BFC (best-fit with coalescing) CPU allocator, read once, when the
#: process first allocates a tensor.
ENV_CPU_BFC = "TF_CPU_ALLOCATOR_USE_BFC"


class KnownMeasurements(Protocol):
    """Measurements made before, by ``measurement_key``: what ``measure_model`` may reuse."""

    def get(self, key: str) -> ModelMeasurement | None:
        """The measurement stored under ``key``, or None."""

    def put(self, key: str, measured: ModelMeasurement) -> None:
        """Stores a new measurement under ``key`` (the first one stored stays)."""


def prepare_measurement(threads: int) -> bool:
    """Prepares this process to time models: the BFC CPU allocator, then ``pin_threads``.

    Must run before TensorFlow executes anything in the process (both settings are read once,
    then); the measurement worker calls it first. A ``TF_CPU_ALLOCATOR_USE_BFC`` already in the
    environment is left as it is (``false`` keeps TensorFlow's default allocator).

    Args:
        threads: Intra-op threads to pin (``pin_threads``).

    Returns:
        ``pin_threads``' answer: False when TensorFlow was already running, and then neither
        setting took effect.
    """
    os.environ.setdefault(ENV_CPU_BFC, "true")
    return pin_threads(threads)


def cpu_allocator() -> str:
    """``bfc`` or ``default``: the CPU allocator the environment asks TensorFlow for."""
    return "bfc" if os.environ.get(ENV_CPU_BFC, "").strip().lower() in ("1", "true") else "default"


def pin_threads(threads: int) -> bool:
    """Pins TensorFlow to ``threads`` intra-op threads and one inter-op thread.

    Must run before TensorFlow executes anything in the process (its thread pools are created
    then and never change); the measurement worker calls it first.

    Args:
        threads: Intra-op threads; 0 or less leaves TensorFlow's defaults.

    Returns:
        True when the setting holds (nothing asked for with ``threads <= 0``); False when
        TensorFlow was already initialized with other settings (a warning is logged and the
        defaults stay).
    """
    if threads <= 0:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:
        log.warning(
            "cannot pin TensorFlow to %d threads: %s (pin them before TensorFlow runs anything); "
            "measuring with %d intra-op and %d inter-op threads",
            threads,
            e,
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
        return False
    return True


def measure_model(
    model: Any,
    input_shape: Sequence[int],
    *,
    runs: int,
    warmup: int | None = None,
    batch_sizes: Sequence[int] = (),
    tflite: Sequence[str] = (),
    threads: int = 0,
    exclusive: Callable[[], contextlib.AbstractContextManager] | None = None,
    known: KnownMeasurements | None = None,
    min_seconds: float = 0.0,
) -> ModelMeasurement:
    """Measures one model under the fixed protocol (see the module docstring).

    Args:
        model: A float32-input model, called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        runs: Timed calls per timed part.
        warmup: Untimed calls before each timed part; default ``max(5, runs // 5)``.
        batch_sizes: Batch sizes to time besides batch 1 (1 itself and repeats are ignored).
        tflite: TensorFlow Lite modes to convert and time: ``float`` and/or ``int8``.
        threads: The TensorFlow Lite interpreter's threads (0: its default), and the TensorFlow
            intra-op threads the caller pinned with ``pin_threads`` (recorded).
        exclusive: A factory of the context manager entered around each timed part (warm-up and
            timed calls) and nothing else: the local launcher pauses the other trials in it.
        known: Measurements to reuse for a model that computes the same under the same
            protocol, and to add this one to (see the module docstring); None: always measure.
        min_seconds: The least seconds each timed part's timed calls last (the spec's
            ``measurement.min_seconds``); 0: exactly ``runs`` calls.

    Returns:
        The metrics, the JSON-ready record and the TensorFlow Lite errors.

    Raises:
        ValueError: ``runs`` below 1, a negative ``warmup`` or ``min_seconds``, a batch size
            below 1, or a mode that is not a TensorFlow Lite mode.
    """
    warmup, extra_sizes, modes = protocol_arguments(runs, warmup, batch_sizes, tflite, min_seconds)
    shape = tuple(int(d) for d in input_shape)
    guard = exclusive or contextlib.nullcontext
    metrics: dict[str, float] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}

    # Untimed: counts (on the one batch-1 trace), then the traces and conversions timing needs.
    start = time.perf_counter()
    metrics["params"] = float(measure.count_parameters(model, shape))
    concrete = measure.trace_inference(model, shape)
    key = measurement_key(concrete, warmup, runs, extra_sizes, modes, threads, min_seconds)
    if known is not None and (earlier := known.get(key)) is not None:
        log.info("measured before under key %s: reusing that measurement", key[:12])
        return earlier
    metrics["flops"] = float(measure.count_multiply_adds(model, shape, concrete=concrete))
    memory = measure.measure_memory_mb(model, shape, concrete=concrete)
    if memory is not None:
        metrics["memory_mb"] = float(memory)
    batch_concretes = {n: measure.trace_inference(model, shape, batch_size=n) for n in extra_sizes}
    seconds["count"] = time.perf_counter() - start

    start = time.perf_counter()
    converted: dict[str, bytes] = {}
    for mode in modes:
        try:
            converted[mode] = measure.convert_to_tflite(concrete, model, mode)
        except Exception as e:  # any converter failure is the model's: recorded
            errors[f"tflite_{mode}"] = _error_text(e)
    seconds["convert"] = time.perf_counter() - start

    # Timed: each part alone inside the exclusive section.
    start = time.perf_counter()
    latencies: dict[int, measure.LatencyMeasurement] = {}
    with guard():
        latencies[1] = measure.measure_latency(
            model, shape, warmup=warmup, runs=runs, concrete=concrete, min_seconds=min_seconds
        )
    for size in extra_sizes:
        with guard():
            latencies[size] = measure.measure_latency(
                model,
                shape,
                warmup=warmup,
                runs=runs,
                batch_size=size,
                concrete=batch_concretes[size],
                min_seconds=min_seconds,
            )
    tflite_latencies: dict[str, measure.LatencyMeasurement] = {}
    for mode, blob in converted.items():
        with guard():
            try:
                tflite_latencies[mode] = measure.measure_tflite_latency(
                    blob, warmup=warmup, runs=runs, threads=threads, min_seconds=min_seconds
                )
            except Exception as e:  # the interpreter refusing it is the model's
                errors[f"tflite_{mode}"] = _error_text(e)
    seconds["timed"] = time.perf_counter() - start

    batch1 = latencies[1]
    metrics["latency_ms"] = batch1.median_ms
    metrics["latency_p90_ms"] = batch1.p90_ms
    metrics["latency_cv"] = batch1.cv
    for size in extra_sizes:
        metrics[f"latency_ms_b{size}"] = latencies[size].median_ms
        metrics[f"latency_p90_ms_b{size}"] = latencies[size].p90_ms
    tflite_record: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode in tflite_latencies:
            size_kb = len(converted[mode]) / 1024
            metrics[f"tflite_{mode}_latency_ms"] = tflite_latencies[mode].median_ms
            metrics[f"tflite_{mode}_latency_p90_ms"] = tflite_latencies[mode].p90_ms
            metrics[f"tflite_{mode}_size_kb"] = size_kb
            tflite_record[mode] = {
                **tflite_latencies[mode].stats(RECORD_DIGITS),
                "size_kb": round(size_kb, RECORD_DIGITS),
            }
        else:
            tflite_record[mode] = {"error": errors[f"tflite_{mode}"]}
    record = {
        "protocol": {
            "warmup": warmup,
            "runs": runs,
            "min_seconds": min_seconds,
            "threads": threads,
            "batch_sizes": [1, *extra_sizes],
        },
        "device": batch1.device,
        "tensorflow": tf.__version__,
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "cpu_allocator": cpu_allocator(),
        "key": key,
        "latency": {str(size): m.stats(RECORD_DIGITS) for size, m in latencies.items()},
        "tflite": tflite_record,
        "seconds": {name: round(value, RECORD_DIGITS) for name, value in seconds.items()},
    }
    measured = ModelMeasurement(metrics, record, errors)
    if known is not None:
        known.put(key, measured)
    return measured


def measurement_key(
    concrete: Any,
    warmup: int,
    runs: int,
    batch_sizes: Sequence[int],
    tflite: Sequence[str],
    threads: int,
    min_seconds: float = 0.0,
) -> str:
    """The sha256 hex digest of what a traced model computes and how this process measures it.

    Two models with one key are measured alike: the same inference computation
    (``inference_fingerprint``) timed by the same protocol settings, threads, allocator,
    TensorFlow version and devices.
    """
    settings = {
        "model": inference_fingerprint(concrete),
        "warmup": warmup,
        "runs": runs,
        "min_seconds": float(min_seconds),
        "batch_sizes": sorted(batch_sizes),
        "tflite": sorted(tflite),
        "threads": threads,
        "tf_threads": [
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        ],
        "cpu_allocator": cpu_allocator(),
        "tensorflow": tf.__version__,
        "devices": sorted(d.name for d in tf.config.list_logical_devices()),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _error_text(error: BaseException) -> str:
    """``"<type>: <message>"``, the message cut to its first lines and ``ERROR_CHARS``."""
    lines = [line.rstrip() for line in str(error).splitlines() if line.strip()]
    message = "\n".join(lines[:ERROR_LINES])
    if len(message) > ERROR_CHARS:
        message = message[: ERROR_CHARS - 3].rstrip() + "..."
    return f"{type(error).__name__}: {message}"
