"""What a model measurement yields, without any framework: timed calls and their spread.

``LatencyMeasurement`` (the samples of timed calls, their median and spread) and
``ModelMeasurement`` (one model measured under the fixed protocol) are shared by the TensorFlow
protocol (``kfnas.training.protocol``) and the PyTorch one (``kfnas.torch.measure``), so both
record the same statistics under the same names, ``protocol_arguments`` checks both protocols'
arguments the same way and ``timed_calls`` times every timed part of both (TensorFlow, TensorFlow
Lite, PyTorch) the same way. This module imports neither framework.

To add a statistic: derive it in ``LatencyMeasurement.__post_init__`` and list it in ``stats``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kfnas.config.spec import TFLITE_MODES, BudgetSpec, ExperimentSpec
from kfnas.records.trial import TrialSpec
from kfnas.tasks import TASKS


def trial_protocol(spec: ExperimentSpec, trial: TrialSpec) -> dict[str, Any]:
    """The protocol a trial's model is measured with, as keyword arguments of either protocol.

    Returns:
        ``input_shape`` (the task's, without the batch dimension), ``runs`` (the budget's
        ``latency_runs``), ``min_seconds``, ``batch_sizes`` and ``tflite`` (the spec's
        ``measurement``).
    """
    return {
        "input_shape": TASKS.get(spec.task.kind).input_shape(spec.task),
        "runs": BudgetSpec(**trial.budget).latency_runs,
        "min_seconds": float(spec.measurement.min_seconds),
        "batch_sizes": tuple(spec.measurement.batch_sizes),
        "tflite": tuple(spec.measurement.tflite),
    }


def protocol_arguments(
    runs: int,
    warmup: int | None,
    batch_sizes: Sequence[int],
    tflite: Sequence[str],
    min_seconds: float = 0.0,
) -> tuple[int, list[int], list[str]]:
    """Checks a measurement's arguments and resolves them, for every framework's protocol.

    Args:
        runs: Timed calls per timed part.
        warmup: Untimed calls before each timed part; ``None``: ``max(5, runs // 5)``.
        batch_sizes: Batch sizes to time besides batch 1.
        tflite: TensorFlow Lite modes asked for.
        min_seconds: The least seconds each timed part lasts (``timed_calls``).

    Returns:
        The warm-up count, the extra batch sizes (without 1 and repeats, in order) and the
        TensorFlow Lite modes (without repeats).

    Raises:
        ValueError: ``runs`` below 1, a negative ``warmup`` or ``min_seconds`` (or not a
            number), a batch size below 1, or a mode that is not a TensorFlow Lite mode.
    """
    warmup = max(5, runs // 5) if warmup is None else warmup
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if not min_seconds >= 0:  # NaN too
        raise ValueError(
            f"min_seconds must be 0 (exactly `runs` timed calls) or more, got {min_seconds}"
        )
    if bad := [size for size in batch_sizes if size < 1]:
        raise ValueError(
            f"batch_sizes must be at least 1, got {bad[0]} in {list(batch_sizes)}: list the "
            f"batch sizes to time besides batch 1, e.g. [8, 32]"
        )
    if bad := [mode for mode in tflite if mode not in TFLITE_MODES]:
        raise ValueError(f"TensorFlow Lite mode {bad[0]!r} is not one of {', '.join(TFLITE_MODES)}")
    extra_sizes = [size for size in dict.fromkeys(batch_sizes) if size != 1]
    return warmup, extra_sizes, list(dict.fromkeys(tflite))


def timed_calls(call: Callable[[], object], runs: int, min_seconds: float = 0.0) -> list[float]:
    """Times ``call`` at least ``runs`` times, and on until ``min_seconds`` have passed.

    A shared machine's speed drifts over seconds, so a median of calls spread over a longer
    window is a steadier figure than one of a burst (see ``MeasurementSpec.min_seconds``).

    Args:
        call: One timed call; it returns once the device has finished (the caller syncs).
        runs: The fewest timed calls.
        min_seconds: The least seconds from the first timed call's start to the last one's end.

    Returns:
        Each call's milliseconds, in call order.
    """
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < runs or time.perf_counter() - began < min_seconds:
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


@dataclasses.dataclass(frozen=True)
class LatencyMeasurement:
    """Timed inference calls and their spread.

    Every statistic is computed from ``samples_ms`` (warm-up calls are never among them). The
    90th percentile interpolates linearly between samples, as ``numpy.percentile`` does.

    Attributes:
        samples_ms: Each timed call, in milliseconds, in call order (warm-up calls excluded).
        median_ms: The median of ``samples_ms``: the reported latency.
        device: The device the calls ran on (e.g. ``/GPU:0``, or ``tflite:CPU``).
        batch_size: The batch size of each call.
        p90_ms: The 90th percentile of ``samples_ms``.
        mean_ms: The mean of ``samples_ms``.
        stdev_ms: The sample standard deviation of ``samples_ms`` (0 for a single sample).
        cv: The coefficient of variation, ``stdev_ms / mean_ms`` (0 when the mean is 0).
        min_ms: The fastest call.
        max_ms: The slowest call.
    """

    samples_ms: tuple[float, ...]
    median_ms: float
    device: str
    batch_size: int = 1
    p90_ms: float = dataclasses.field(init=False)
    mean_ms: float = dataclasses.field(init=False)
    stdev_ms: float = dataclasses.field(init=False)
    cv: float = dataclasses.field(init=False)
    min_ms: float = dataclasses.field(init=False)
    max_ms: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("a latency measurement needs at least one timed call")
        samples = [float(x) for x in self.samples_ms]
        mean = statistics.fmean(samples)
        stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
        derived = {
            "p90_ms": float(np.percentile(samples, 90)),
            "mean_ms": mean,
            "stdev_ms": stdev,
            "cv": stdev / mean if mean > 0 else 0.0,
            "min_ms": min(samples),
            "max_ms": max(samples),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_samples(
        cls, samples_ms: Sequence[float], device: str, batch_size: int = 1
    ) -> LatencyMeasurement:
        """The measurement of these timed calls: their median and spread."""
        samples = tuple(float(x) for x in samples_ms)
        median = float(statistics.median(samples)) if samples else math.nan
        return cls(samples, median, device, batch_size)

    def stats(self, digits: int = 4) -> dict[str, float]:
        """The statistics (not the samples), rounded to ``digits`` decimals: JSON-ready.

        Also the timed calls' count, ``runs``.
        """
        stats: dict[str, float] = {
            name: round(getattr(self, name), digits)
            for name in ("median_ms", "p90_ms", "mean_ms", "stdev_ms", "cv", "min_ms", "max_ms")
        }
        stats["runs"] = len(self.samples_ms)
        return stats


@dataclasses.dataclass(frozen=True)
class ModelMeasurement:
    """The result of measuring one model under the protocol.

    Attributes:
        metrics: Numbers a trial reports and constraints target: ``params``, ``flops``
            (multiply-adds at batch 1), ``latency_ms`` (batch-1 median), ``latency_p90_ms``,
            ``latency_cv``, ``memory_mb`` (GPU only), per extra batch size N ``latency_ms_bN`` and
            ``latency_p90_ms_bN``, per TensorFlow Lite mode that converted
            ``tflite_<mode>_latency_ms``, ``tflite_<mode>_latency_p90_ms`` and
            ``tflite_<mode>_size_kb``.
        record: JSON-ready details: the protocol (``warmup``, ``runs``, ``threads``,
            ``batch_sizes``), ``device``, ``tensorflow`` version, ``tf_threads`` in effect,
            ``latency`` statistics per batch size (keys ``"1"``, ``"8"``, ...), ``tflite``
            statistics and size (or ``error``) per mode, and the ``seconds`` each phase took
            (``count``, ``convert``, ``timed``).
        errors: What failed without failing the measurement, e.g.
            ``{"tflite_int8": "ConverterError: ..."}``; empty when everything worked.
    """

    metrics: dict[str, float]
    record: dict[str, Any]
    errors: dict[str, str]
