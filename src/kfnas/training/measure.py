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
  ``measure_latency`` returns the timed calls with their spread (90th percentile, mean, standard
  deviation, coefficient of variation, extremes), at any batch size.
* ``convert_to_tflite`` and ``measure_tflite_latency``: the same model converted to TensorFlow
  Lite (``float``, or ``int8`` dynamic-range quantization) and timed with the TFLite interpreter.
* ``measure_memory_mb``: peak accelerator memory TensorFlow allocated during one batch-1 inference
  on GPU; None on CPU, where TensorFlow keeps no allocator statistics.

To add a measurement: a function of ``(model, input_shape, ...)`` here, with its unit in its name;
``kfnas.training.protocol.measure_model`` runs them all under one fixed protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

# Importing train_utils registers tf-models-official's FLOPs statistics (Einsum) with the profiler.
from official.core import train_utils  # noqa: F401
from tensorflow.python.framework import convert_to_constants as _to_constants

from kfnas.training.stats import LatencyMeasurement, timed_calls


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


def trace_inference(
    model: Any, input_shape: Sequence[int], *, dtype: tf.DType = tf.float32, batch_size: int = 1
) -> Any:
    """The concrete function of ``model(images, training=False)`` at a fixed batch size.

    One such function serves every measurement of a model at that batch size (FLOPs, latency,
    memory, TensorFlow Lite conversion), so the model is traced once.

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        dtype: The input dtype.
        batch_size: The batch dimension of the traced input.

    Raises:
        ValueError: ``batch_size`` is below 1.
    """
    _check_batch_size(batch_size)
    spec = tf.TensorSpec([batch_size, *input_shape], dtype)

    def call(images: tf.Tensor) -> Any:
        return model(images, training=False)

    # Without AutoGraph first, as trials build and train (``kfnas.tasks.tracing``): converting
    # every layer's code took ~0.7 s of a demo model's ~2.2 s trace, for the same graph. A model
    # whose Python branches on tensors fails that trace with a TypeError, and gets AutoGraph.
    try:
        return tf.function(call, autograph=False).get_concrete_function(spec)
    except TypeError:
        return tf.function(call).get_concrete_function(spec)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def count_float_ops(
    model: Any,
    input_shape: Sequence[int],
    dtype: tf.DType = tf.float32,
    *,
    concrete: Any = None,
) -> int:
    """FLOPs the TF profiler counts for one batch-1 inference (a multiply-add is 2 FLOPs).

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        dtype: The input dtype.
        concrete: The model's batch-1 ``trace_inference`` function, if already traced.
    """
    if concrete is None:
        concrete = trace_inference(model, input_shape, dtype=dtype)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=_frozen_graph(concrete), run_meta=tf.compat.v1.RunMetadata(), options=options
    )
    return int(profile.total_float_ops)


def _frozen_graph(concrete: Any) -> tf.Graph:
    """The function's graph with its variables as constants and its calls inlined.

    What ``convert_variables_to_constants_v2_as_graph`` freezes, without the concrete function
    it then builds from the frozen graph (and this count does not use): that took ~1-2.5 s of a
    demo model's measurement, the graph's import 0.2 s. (TensorFlow's own steps, pinned with it;
    its counts also came out the same from one process to the next, the function's moved by
    ~0.03%.)
    """
    data = _to_constants._FunctionConverterDataInEager(
        func=concrete, lower_control_flow=True, aggressive_inlining=False
    )
    graph_def, _ = _to_constants._replace_variables_by_constants(converter_data=data)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def count_multiply_adds(
    model: Any,
    input_shape: Sequence[int],
    dtype: tf.DType = tf.float32,
    *,
    concrete: Any = None,
) -> int:
    """Multiply-adds for one batch-1 inference: profiler FLOPs // 2 (see the module docstring).

    Vertex AI NAS reports this number in billions as ``model_flops`` ("multi-adds").

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        dtype: The input dtype.
        concrete: The model's batch-1 ``trace_inference`` function, if already traced.
    """
    return count_float_ops(model, input_shape, dtype, concrete=concrete) // 2


def measure_latency(
    model: Any,
    input_shape: Sequence[int],
    *,
    warmup: int = 20,
    runs: int = 100,
    dtype: tf.DType = tf.float32,
    batch_size: int = 1,
    concrete: Any = None,
    min_seconds: float = 0.0,
) -> LatencyMeasurement:
    """Times inference of ``model`` on the current device, at batch 1 unless told otherwise.

    The model runs through one ``tf.function`` in inference mode (``training=False``) on a random
    input already on the device. ``warmup`` untimed calls (the first one traces unless
    ``concrete`` is given) precede ``runs`` timed calls, and more until ``min_seconds`` have
    passed (``timed_calls``); each timed call ends when the device has finished (its own devices
    only, see ``_local_sync``), so asynchronous GPU work is included.

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        warmup: Untimed calls before the timed ones.
        runs: Timed calls.
        dtype: The input dtype.
        batch_size: The batch dimension of each call.
        concrete: The model's ``trace_inference`` function for ``batch_size`` (batch 1 by
            default), already traced, so the model is not traced again.
        min_seconds: The least seconds the timed calls last.

    Raises:
        ValueError: ``warmup`` is negative, ``runs`` or ``batch_size`` is below 1, or
            ``concrete`` was traced for another input shape.
    """
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    _check_batch_size(batch_size)
    shape = [batch_size, *input_shape]
    if concrete is None:
        concrete = trace_inference(model, input_shape, dtype=dtype, batch_size=batch_size)
    else:
        traced = _traced_input_shape(concrete)
        if traced is not None and traced != shape:
            raise ValueError(
                f"concrete was traced for input shape {traced}, not {shape} "
                f"(batch_size={batch_size}): trace it with trace_inference(..., batch_size=...)"
            )
    images = tf.cast(tf.random.uniform(shape, maxval=255.0), dtype)
    sync = _local_sync(images.device)
    for _ in range(warmup):
        concrete(images)
    sync()

    def call() -> None:
        concrete(images)
        sync()

    samples = timed_calls(call, runs, min_seconds)
    return LatencyMeasurement.from_samples(samples, images.device, batch_size)


def _traced_input_shape(concrete: Any) -> list[int | None] | None:
    """The input shape a concrete function was traced for, when it has one tensor input."""
    try:
        args, kwargs = concrete.structured_input_signature
    except (AttributeError, TypeError, ValueError):
        return None
    specs = [*args, *kwargs.values()]
    if len(specs) != 1 or not isinstance(specs[0], tf.TensorSpec):
        return None
    return specs[0].shape.as_list()


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
    model: Any,
    input_shape: Sequence[int],
    dtype: tf.DType = tf.float32,
    *,
    concrete: Any = None,
) -> float | None:
    """Peak GPU memory (MiB) TensorFlow held while running one batch-1 inference on ``GPU:0``.

    The peak counts everything TensorFlow had allocated on the GPU at the time, so the model's
    weights are included (and so is anything else the process keeps there). Vertex AI NAS reports
    the used-memory difference around loading the model, which is close to this on a dedicated GPU.

    Args:
        model: Called as ``model(images, training=False)``.
        input_shape: One input without the batch dimension, e.g. ``(64, 64, 3)``.
        dtype: The input dtype.
        concrete: The model's batch-1 ``trace_inference`` function, if already traced.

    Returns:
        The peak in MiB, or None without a GPU (TensorFlow keeps no allocator statistics on CPU).
    """
    if not tf.config.list_logical_devices("GPU"):
        return None
    if concrete is None:
        concrete = trace_inference(model, input_shape, dtype=dtype)
    with tf.device("/GPU:0"):
        images = tf.zeros([1, *input_shape], dtype)
        concrete(images)  # warm up: allocator pools and autotuning are not the model's
        tf.test.experimental.sync_devices()
        tf.config.experimental.reset_memory_stats("GPU:0")
        concrete(images)
        tf.test.experimental.sync_devices()
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def convert_to_tflite(concrete_fn: Any, model: Any, mode: str) -> bytes:
    """Converts a traced inference function to a TensorFlow Lite flatbuffer.

    Args:
        concrete_fn: The model's ``trace_inference`` function (a fixed input shape converts to a
            fixed-shape TFLite model).
        model: The model whose variables ``concrete_fn`` captures (the converter freezes them).
        mode: ``float`` (the weights as they are) or ``int8`` (dynamic-range quantization: int8
            weights, float activations; ``tf.lite.Optimize.DEFAULT`` with no representative
            dataset).

    Returns:
        The TFLite model.

    Raises:
        ValueError: ``mode`` is neither ``float`` nor ``int8``.
        Exception: Whatever the converter raises for a model it cannot convert (typically
            ``tf.lite.ConverterError`` naming the ops TensorFlow Lite has no kernel for).
    """
    if mode not in ("float", "int8"):
        raise ValueError(f"TFLite mode must be 'float' or 'int8', got {mode!r}")
    # The trackable object keeps the variables alive; a callable that is not a tf.Module (a
    # task's view of its model's network) holds its model, which does that already.
    trackable = model if isinstance(model, tf.Module) else None
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_fn], trackable)
    if mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


def measure_tflite_latency(
    tflite_bytes: bytes,
    *,
    warmup: int = 20,
    runs: int = 100,
    threads: int = 0,
    min_seconds: float = 0.0,
) -> LatencyMeasurement:
    """Times a TensorFlow Lite model with the TFLite interpreter on this machine's CPU.

    The model's inputs are set once to random values of their shape and dtype; each call invokes
    the interpreter (which runs synchronously on the CPU). ``warmup`` untimed invocations come
    first.

    Args:
        tflite_bytes: The TFLite flatbuffer (``convert_to_tflite``).
        warmup: Untimed invocations before the timed ones.
        runs: Timed invocations.
        threads: Interpreter threads; 0: the interpreter's default.
        min_seconds: The least seconds the timed invocations last (``timed_calls``).

    Raises:
        ValueError: ``warmup`` is negative or ``runs`` is below 1, or the interpreter refuses the
            model.
    """
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=threads or None)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    inputs = []
    for detail in interpreter.get_input_details():
        shape, dtype = [int(d) for d in detail["shape"]], np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(max(info.min, 0), min(info.max, 255), shape, endpoint=True)
        else:
            value = rng.uniform(0.0, 255.0, shape)
        inputs.append(value.astype(dtype))
        interpreter.set_tensor(detail["index"], inputs[-1])
    for _ in range(warmup):
        interpreter.invoke()
    samples = timed_calls(interpreter.invoke, runs, min_seconds)
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 1
    return LatencyMeasurement.from_samples(samples, "tflite:CPU", batch)
