"""Model measurements a trial reports beside its accuracy: size, compute, latency, memory.

Conventions (the ones Vertex AI NAS and MnasNet use, so targets carry over):

* ``count_parameters``: every weight of the model, trainable or not (batch-norm moving statistics
  included), like Keras' "Total params" and ``official.core.train_utils.try_count_params``.
* ``count_multiply_adds``: multiply-adds for ONE input at batch 1, in inference mode. The TF
  profiler counts FLOPs on the frozen graph (a multiply-add is 2 FLOPs); the result is FLOPs / 2,
  rounded down: Vertex's ``FLOPS_HALF_ADDS`` ("multi-adds = FLOPs / 2"). Ops that are not
  multiply-adds but that the profiler counts (bias adds, element-wise adds and multiplies) each add
  half a multiply-add per output element; activations, pooling and inference batch norm count
  nothing. So Dense 10 -> 5 is 50 multiply-adds without bias and 52 (105 FLOPs / 2) with it.
* ``measure_latency_ms``: batch 1 on the current device, through a ``tf.function`` in inference
  mode; warm-up calls, then the MEDIAN of timed calls (each timed call waits for the device).
* ``measure_memory_mb``: peak accelerator memory TensorFlow allocated during one batch-1 inference
  on GPU; None on CPU, where TensorFlow keeps no allocator statistics.

To add a measurement: a function of ``(model, input_shape, ...)`` here, with its unit in its name.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

# Importing train_utils registers tf-models-official's FLOPs statistics (Einsum) with the profiler.
from official.core import train_utils  # noqa: F401
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2_as_graph,
)


@dataclasses.dataclass(frozen=True)
class LatencyMeasurement:
    """Timed batch-1 inference calls.

    Attributes:
        samples_ms: Each timed call, in milliseconds, in call order (warm-up calls excluded).
        median_ms: The median of ``samples_ms``: the reported latency.
        device: The device the calls ran on (e.g. ``/GPU:0``).
    """

    samples_ms: tuple[float, ...]
    median_ms: float
    device: str


def count_parameters(
    model: Any, input_shape: Sequence[int] | None = None, *, trainable_only: bool = False
) -> int:
    """The number of weights of a model (non-trainable ones too unless ``trainable_only``).

    A model that was never called may lack some of its weights (tf-models' RetinaNet creates its
    head's on the first call), so an unbuilt model is first called once on zeros of
    ``input_shape`` at batch 1, in inference mode.

    Args:
        model: The model.
        input_shape: One input without the batch dimension; needed only if the model is unbuilt.
        trainable_only: Count only trainable weights.

    Raises:
        ValueError: The model is not built and no ``input_shape`` was given.
    """
    if not getattr(model, "built", True):
        if input_shape is None:
            raise ValueError(
                "the model is not built: pass input_shape, or call the model once, before counting"
            )
        model(tf.zeros([1, *input_shape]), training=False)
    variables = model.trainable_variables if trainable_only else model.variables
    unique = {v.ref(): v for v in variables}  # a shared weight counts once
    return int(sum(int(np.prod(v.shape)) for v in unique.values()))


def _inference_function(model: Any, input_shape: Sequence[int], dtype: tf.DType) -> Any:
    spec = tf.TensorSpec([1, *input_shape], dtype)
    return tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)


def count_float_ops(model: Any, input_shape: Sequence[int], dtype: tf.DType = tf.float32) -> int:
    """FLOPs the TF profiler counts for one batch-1 inference (a multiply-add is 2 FLOPs).

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        dtype: The input dtype.
    """
    concrete = _inference_function(model, input_shape, dtype)
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), options=options
    )
    return int(profile.total_float_ops)


def count_multiply_adds(
    model: Any, input_shape: Sequence[int], dtype: tf.DType = tf.float32
) -> int:
    """Multiply-adds for one batch-1 inference: profiler FLOPs // 2 (see the module docstring).

    Vertex AI NAS reports this number in billions as ``model_flops`` ("multi-adds").

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        dtype: The input dtype.
    """
    return count_float_ops(model, input_shape, dtype) // 2


def measure_latency(
    model: Any,
    input_shape: Sequence[int],
    *,
    warmup: int = 20,
    runs: int = 100,
    dtype: tf.DType = tf.float32,
) -> LatencyMeasurement:
    """Times batch-1 inference of ``model`` on the current device.

    The model runs through one ``tf.function`` in inference mode (``training=False``) on a random
    input already on the device. ``warmup`` untimed calls (the first one traces) precede ``runs``
    timed calls; each timed call ends when the device has finished
    (``tf.test.experimental.sync_devices``), so asynchronous GPU work is included.

    Raises:
        ValueError: ``warmup`` is negative or ``runs`` is below 1.
    """
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    concrete = _inference_function(model, input_shape, dtype)
    images = tf.cast(tf.random.uniform([1, *input_shape], maxval=255.0), dtype)
    sync = _local_sync(images.device)
    for _ in range(warmup):
        concrete(images)
    sync()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        concrete(images)
        sync()
        samples.append((time.perf_counter() - start) * 1000.0)
    return LatencyMeasurement(tuple(samples), float(statistics.median(samples)), images.device)


def _local_sync(device: str) -> Callable[[], None]:
    """A function that waits until this process's devices have finished their work.

    ``tf.test.experimental.sync_devices`` would also wait on the devices of the other processes
    of a multi-node trial, which the timing never uses (and which may be gone).
    """
    task = device.rsplit("/device:", 1)[0]
    names = [d.name for d in tf.config.list_logical_devices() if d.name.startswith(task)]

    def sync() -> None:
        for name in names:
            with tf.device(name):
                tf.raw_ops.SyncDevice()

    return sync


def measure_latency_ms(
    model: Any,
    input_shape: Sequence[int],
    *,
    warmup: int = 20,
    runs: int = 100,
    dtype: tf.DType = tf.float32,
) -> float:
    """The median batch-1 inference latency in milliseconds (see ``measure_latency``)."""
    return measure_latency(model, input_shape, warmup=warmup, runs=runs, dtype=dtype).median_ms


def measure_memory_mb(
    model: Any, input_shape: Sequence[int], dtype: tf.DType = tf.float32
) -> float | None:
    """Peak GPU memory (MiB) TensorFlow held while running one batch-1 inference on ``GPU:0``.

    The peak counts everything TensorFlow had allocated on the GPU at the time, so the model's
    weights are included (and so is anything else the process keeps there). Vertex AI NAS reports
    the used-memory difference around loading the model, which is close to this on a dedicated GPU.

    Returns:
        The peak in MiB, or None without a GPU (TensorFlow keeps no allocator statistics on CPU).
    """
    if not tf.config.list_logical_devices("GPU"):
        return None
    concrete = _inference_function(model, input_shape, dtype)
    with tf.device("/GPU:0"):
        images = tf.zeros([1, *input_shape], dtype)
        concrete(images)  # warm up: allocator pools and autotuning are not the model's
        tf.test.experimental.sync_devices()
        tf.config.experimental.reset_memory_stats("GPU:0")
        concrete(images)
        tf.test.experimental.sync_devices()
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
