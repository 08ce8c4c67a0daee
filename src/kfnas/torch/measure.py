"""The measurement protocol on torch models: the same figures, names and order as TensorFlow's.

``measure_module`` follows ``kfnas.training.protocol`` step for step, so a torch trial's reward
and report read exactly as a TensorFlow one's:

1. Untimed: ``params`` (every parameter and floating-point buffer, trainable or not: batch-norm
   running statistics count, as Keras' total does), ``flops`` (multiply-adds of one batch-1
   inference, ``torch.utils.flop_counter`` FLOPs / 2, as Vertex's "FLOPs half adds"), and on a
   GPU ``memory_mb`` (peak memory allocated by one batch-1 inference).
2. Timed, each inside ``exclusive()`` when given (the local launcher pauses the other trials):
   batch 1, then each extra batch size: ``warmup`` untimed calls, then ``runs`` timed ones (and
   more until ``min_seconds`` have passed) in inference mode (``torch.inference_mode``), each
   waiting for the device; the median is the latency, with the 90th percentile and the
   coefficient of variation beside it (``kfnas.training.stats.LatencyMeasurement``).

Threads: ``threads`` > 0 pins torch's intra-op threads (``torch.set_num_threads``) and, when torch
has not run anything parallel yet, one inter-op thread. TensorFlow Lite modes do not apply to a
torch model: each requested mode is recorded as an error (the spec's ``tflite_fallback`` decides
whether a constraint on it falls back to ``latency_ms``).

To extend: add the measurement here in the untimed or timed part and give it the metric name the
TensorFlow protocol uses.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from kfnas.config.spec import ExperimentSpec
from kfnas.records.trial import TrialSpec
from kfnas.training.stats import (
    LatencyMeasurement,
    ModelMeasurement,
    protocol_arguments,
    timed_calls,
    trial_protocol,
)

#: Decimals of the floats in ``ModelMeasurement.record`` (as the TensorFlow protocol).
RECORD_DIGITS = 4


def pin_threads(threads: int) -> None:
    """Pins torch to ``threads`` intra-op threads (and one inter-op thread while it can)."""
    import torch

    if threads <= 0:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # set once, before any inter-op work
        torch.set_num_interop_threads(1)


def count_parameters(module: Any) -> int:
    """Every parameter and floating-point buffer (running statistics; not counters)."""
    buffers = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return sum(p.numel() for p in module.parameters()) + buffers


def count_multiply_adds(module: Any, example: Any) -> int:
    """Multiply-adds of one inference on ``example`` (``flop_counter`` FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(example)
    return int(counter.get_total_flops()) // 2


def measure_latency(
    module: Any, example: Any, *, warmup: int, runs: int, device: str, min_seconds: float = 0.0
) -> LatencyMeasurement:
    """``warmup`` untimed, then ``runs`` timed inference calls on ``example``.

    Timed calls go on until ``min_seconds`` have passed (``timed_calls``).
    """
    import torch

    def call() -> None:
        module(example)
        if example.is_cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(warmup):
            call()
        samples = timed_calls(call, runs, min_seconds)
    return LatencyMeasurement.from_samples(samples, device, batch_size=len(example))


def measure_module(
    module: Any,
    input_shape: Sequence[int],
    *,
    runs: int,
    warmup: int | None = None,
    batch_sizes: Sequence[int] = (),
    tflite: Sequence[str] = (),
    threads: int = 0,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
    min_seconds: float = 0.0,
) -> ModelMeasurement:
    """Measures one torch module under the fixed protocol (see the module docstring).

    Args:
        module: The model, in inference mode (``module.eval()``), on its device.
        input_shape: One input without the batch dimension, channels first.
        runs: Timed calls per timed part.
        warmup: Untimed calls before each timed part; default ``max(5, runs // 5)``.
        batch_sizes: Batch sizes to time besides batch 1.
        tflite: TensorFlow Lite modes asked for: recorded as errors (not a TensorFlow model).
        threads: The intra-op threads the caller pinned (recorded).
        exclusive: A factory of the context manager entered around each timed part.
        min_seconds: The least seconds each timed part's timed calls last.

    Raises:
        ValueError: ``runs`` below 1, a negative ``warmup`` or ``min_seconds``, or a batch size
            below 1.
    """
    import torch

    warmup, extra_sizes, modes = protocol_arguments(runs, warmup, batch_sizes, tflite, min_seconds)
    parameter = next(module.parameters(), None)
    on = parameter.device if parameter is not None else torch.device("cpu")
    device = str(on)
    shape = tuple(int(d) for d in input_shape)
    guard = exclusive or contextlib.nullcontext
    metrics: dict[str, float] = {}
    seconds: dict[str, float] = {}
    errors = {
        f"tflite_{mode}": "TensorFlow Lite converts TensorFlow models only; this is a torch model"
        for mode in modes
    }

    start = time.perf_counter()
    example = torch.zeros((1, *shape), device=on)
    metrics["params"] = float(count_parameters(module))
    metrics["flops"] = float(count_multiply_adds(module, example))
    if on.type == "cuda":
        torch.cuda.reset_peak_memory_stats(on)
        with torch.inference_mode():
            module(example)
        metrics["memory_mb"] = torch.cuda.max_memory_allocated(on) / 2**20
    seconds["count"] = time.perf_counter() - start

    start = time.perf_counter()
    latencies: dict[int, LatencyMeasurement] = {}
    for size in [1, *extra_sizes]:
        batch = torch.zeros((size, *shape), device=on)
        with guard():
            latencies[size] = measure_latency(
                module, batch, warmup=warmup, runs=runs, device=device, min_seconds=min_seconds
            )
    seconds["timed"] = time.perf_counter() - start

    batch1 = latencies[1]
    metrics["latency_ms"] = batch1.median_ms
    metrics["latency_p90_ms"] = batch1.p90_ms
    metrics["latency_cv"] = batch1.cv
    for size in extra_sizes:
        metrics[f"latency_ms_b{size}"] = latencies[size].median_ms
        metrics[f"latency_p90_ms_b{size}"] = latencies[size].p90_ms
    record = {
        "protocol": {
            "warmup": warmup,
            "runs": runs,
            "min_seconds": min_seconds,
            "threads": threads,
            "batch_sizes": [1, *extra_sizes],
        },
        "device": device,
        "torch": torch.__version__,
        "torch_threads": {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
        },
        "latency": {str(size): m.stats(RECORD_DIGITS) for size, m in latencies.items()},
        "tflite": {mode: {"error": errors[f"tflite_{mode}"]} for mode in modes},
        "seconds": {name: round(value, RECORD_DIGITS) for name, value in seconds.items()},
    }
    return ModelMeasurement(metrics, record, errors)


def measure_trial_module(
    spec: ExperimentSpec,
    trial: TrialSpec,
    module: Any,
    *,
    threads: int = 0,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
) -> ModelMeasurement:
    """Measures a trial's module: its budget's ``latency_runs``, the spec's batch sizes."""
    return measure_module(
        module, **trial_protocol(spec, trial), threads=threads, exclusive=exclusive
    )


def measure_stored_trial(
    spec: ExperimentSpec,
    trial: TrialSpec,
    model_dir: str | Path,
    *,
    threads: int = 0,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
) -> ModelMeasurement:
    """The PyTorch framework's measurer (``kfnas.tasks.frameworks``): pin, restore, measure.

    Raises:
        FileNotFoundError: ``model_dir`` holds no ``ckpt-<step>.pt``.
    """
    from kfnas.torch.runner import trial_device

    pin_threads(threads)
    module = restore_trial_module(spec, trial, model_dir).to(trial_device())
    return measure_trial_module(spec, trial, module, threads=threads, exclusive=exclusive)


def restore_trial_module(spec: ExperimentSpec, trial: TrialSpec, model_dir: str | Path) -> Any:
    """The trial's module with the weights of its newest checkpoint, on the CPU, in inference mode.

    Raises:
        FileNotFoundError: ``model_dir`` holds no ``ckpt-<step>.pt``.
    """
    import torch

    from kfnas.torch.runner import build_trial_module, latest_checkpoint

    latest = latest_checkpoint(Path(model_dir))
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint (ckpt-<step>.pt) in {model_dir}: the trial's model/ folder was not "
            f"uploaded; run the trial again"
        )
    module = build_trial_module(spec, trial)
    state = torch.load(latest, map_location="cpu", weights_only=False)  # saved on a GPU or not
    module.load_state_dict(state["model"])
    return module.eval()
