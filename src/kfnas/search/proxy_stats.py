"""How trustworthy a proxy task is: the spread and smoothness of repeated trainings of one model.

A proxy task (fewer steps, less data) is only useful for a search if it ranks architectures the
way full training would. Training one architecture several times (5 by default) with the proxy
setting measures two things:

* **Variance**: the coefficient of variation (``std / |mean|``) of the repeats' final metric
  values. Above ``VARIANCE_THRESHOLD`` (0.4) the score of one architecture varies too much between
  runs for the search to tell architectures apart.
* **Smoothness**: how much a training curve goes down on its way up. Each curve is min-max
  normalized to the unit square, interpolated piecewise-linearly (a linear spline through every
  point), and its slope is sampled at 30 points, 10 evenly spaced in each of ``[0, 0.7)``,
  ``[0.7, 0.9)`` and ``[0.9, 1.0)`` (denser towards the end of training, where the score is read).
  A curve's smoothness is ``|sum of the negative slopes|``: 0 for a curve that never goes down.
  The run's smoothness is the mean over its repeats; above ``SMOOTHNESS_THRESHOLD`` (10) the
  curve zig-zags.

Pure NumPy; the stages of the variance measurement read the curves from the store and call
``summarize``; ``kfnas.views.variance`` renders the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SMOOTHNESS_THRESHOLD",
    "VARIANCE_THRESHOLD",
    "VarianceSummary",
    "coefficient_of_variation",
    "curve_smoothness",
    "summarize",
    "training_step_pct",
]

#: A proxy task whose repeats' coefficient of variation is at most this ranks reliably enough.
VARIANCE_THRESHOLD: float = 0.4
#: A training curve whose smoothness (``curve_smoothness``) is at most this is smooth enough.
SMOOTHNESS_THRESHOLD: float = 10.0

#: Where the slope of a normalized curve is sampled: ``_SAMPLES_PER_SECTION`` evenly spaced points
#: in each half-open section ``[start, end)``.
_SECTIONS: tuple[tuple[float, float], ...] = ((0.0, 0.7), (0.7, 0.9), (0.9, 1.0))
_SAMPLES_PER_SECTION = 10
_SAMPLES = np.concatenate(
    [np.linspace(a, b, _SAMPLES_PER_SECTION, endpoint=False) for a, b in _SECTIONS]
)

_VARIANCE_ADVICE = {
    True: "the proxy task's scores are consistent between runs of one architecture: "
    "it can rank architectures",
    False: "the proxy task's scores vary too much between runs of one architecture to rank "
    "architectures: train longer, use more data, or lower the learning rate",
}
_UNDEFINED_ADVICE = (
    "the repeats' final scores average 0, so their coefficient of variation is undefined: the "
    "proxy task learns nothing measurable; train longer or on more data"
)
_SMOOTHNESS_ADVICE = {
    True: "the training curve rises smoothly: its last evaluations are a fair score",
    False: "the training curve zig-zags: evaluate on more data or smooth the learning rate "
    "schedule",
}
_EVALUATIONS_HINT = (
    "raise budget.evaluations to at least 2 (10 or more draws a meaningful curve) so that each "
    "repeat evaluates several times during its training"
)


def _repeats_error(n: int, detail: str) -> ValueError:
    return ValueError(
        f"a variance measurement needs at least 2 finished repeats, got {n}: {detail}"
    )


def coefficient_of_variation(values: Sequence[float]) -> float:
    """The coefficient of variation ``std / |mean|`` of ``values``.

    ``std`` is the population standard deviation (NumPy's default ``ddof=0``), as Vertex AI NAS's
    proxy-task variance tool computes it: ``[0.5, 0.7]`` gives ``0.1 / 0.6``. The absolute value
    of the mean keeps the measure meaningful for metrics that are negative (a negated loss).

    Raises:
        ValueError: Fewer than 2 values, a NaN or infinite value, or a mean of 0.
    """
    array = np.asarray(list(values), dtype=float)
    if array.size < 2:
        raise _repeats_error(int(array.size), f"final values {array.tolist()}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"the repeats' final values must be finite numbers, got {array.tolist()}: a NaN or "
            "infinite score means a repeat diverged"
        )
    mean = float(np.mean(array))
    if mean == 0.0:
        raise ValueError(
            f"the coefficient of variation is undefined for values with mean 0: {array.tolist()}"
        )
    return float(np.std(array)) / abs(mean)


def _normalize(array: np.ndarray) -> np.ndarray | None:
    """``array`` min-max scaled to ``[0, 1]``, or ``None`` when it is constant."""
    low, high = float(array.min()), float(array.max())
    if high == low:
        return None
    return (array - low) / (high - low)


def curve_smoothness(steps: Sequence[float], values: Sequence[float]) -> float:
    """How much one training curve goes down: 0 for a curve that never decreases.

    ``steps`` may be training steps, percentages of training (``training_step_pct`` in
    ``[0, 100]``) or fractions: both coordinates are min-max normalized to ``[0, 1]``, so only the
    curve's shape counts (scaling the values or the steps gives the same result). Points are
    sorted by step; where one step has several values, the last one given counts. The curve is
    interpolated piecewise-linearly through its points (a linear spline, ``k=1, s=0``) and its
    slope is read at 10 evenly spaced points in each of ``[0, 0.7)``, ``[0.7, 0.9)`` and
    ``[0.9, 1.0)``; a sample on a point of the curve takes the slope of the piece starting there.
    The result is ``|sum of the negative slopes|``. A flat curve has smoothness 0.

    Raises:
        ValueError: Different lengths, a NaN or infinite coordinate, or fewer than 2 distinct
            steps (the repeats evaluated only once: raise ``budget.evaluations``).
    """
    x = np.asarray(list(steps), dtype=float)
    y = np.asarray(list(values), dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a curve needs as many steps as values, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a curve's steps and values must be finite numbers")
    # Sort by step (stable, so the last value given at a repeated step ends last), keep it.
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    last = np.ones(x.size, dtype=bool)
    last[:-1] = x[1:] != x[:-1]
    x, y = x[last], y[last]
    if x.size < 2:
        raise ValueError(
            f"a smoothness measurement needs an evaluation curve with at least 2 distinct steps, "
            f"got {x.size}: {_EVALUATIONS_HINT}"
        )
    nx, ny = _normalize(x), _normalize(y)
    if ny is None:
        return 0.0
    assert nx is not None  # 2 distinct steps
    slopes = np.diff(ny) / np.diff(nx)
    # The piece [nx[i], nx[i+1]) holding each sample; the last piece also holds x = 1.
    piece = np.clip(np.searchsorted(nx, _SAMPLES, side="right") - 1, 0, slopes.size - 1)
    derivatives = slopes[piece]
    return float(abs(derivatives[derivatives < 0].sum()))


def training_step_pct(steps: Sequence[float], train_steps: int) -> tuple[float, ...]:
    """``steps`` as percentages of a training of ``train_steps`` steps (``training_step_pct``).

    Raises:
        ValueError: ``train_steps`` not positive.
    """
    if train_steps <= 0:
        raise ValueError(f"train_steps must be positive, got {train_steps}")
    return tuple(100.0 * float(s) / train_steps for s in steps)


@dataclasses.dataclass(frozen=True)
class VarianceSummary:
    """The proxy-task variance of one architecture trained several times.

    Attributes:
        metric: The metric measured (``objectives.metric``).
        final_values: Each repeat's final metric value, in the order of ``trial_ids``.
        coefficient_of_variation: ``std / |mean|`` of ``final_values`` (population std); None
            when their mean is 0 (every repeat scored 0: undefined, and not good).
        smoothness: The mean of ``smoothness_per_curve``.
        smoothness_per_curve: Each repeat's ``curve_smoothness``, in the order of ``trial_ids``.
        variance_ok: ``coefficient_of_variation <= VARIANCE_THRESHOLD``.
        smoothness_ok: ``smoothness <= SMOOTHNESS_THRESHOLD``.
        trial_ids: The repeats' trial ids (empty when the summary was built without them).
    """

    metric: str
    final_values: tuple[float, ...]
    coefficient_of_variation: float | None
    smoothness: float
    smoothness_per_curve: tuple[float, ...]
    variance_ok: bool
    smoothness_ok: bool
    trial_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data, with the thresholds and one line of advice per verdict.

        Keys: ``metric``, ``repeats``, ``trial_ids``, ``final_values``,
        ``coefficient_of_variation``, ``variance_threshold``, ``variance_ok``,
        ``variance_advice``, ``smoothness``, ``smoothness_per_curve``, ``smoothness_threshold``,
        ``smoothness_ok``, ``smoothness_advice``.
        """
        return {
            "metric": self.metric,
            "repeats": len(self.final_values),
            "trial_ids": list(self.trial_ids),
            "final_values": list(self.final_values),
            "coefficient_of_variation": self.coefficient_of_variation,
            "variance_threshold": VARIANCE_THRESHOLD,
            "variance_ok": self.variance_ok,
            "variance_advice": (
                _UNDEFINED_ADVICE
                if self.coefficient_of_variation is None
                else _VARIANCE_ADVICE[self.variance_ok]
            ),
            "smoothness": self.smoothness,
            "smoothness_per_curve": list(self.smoothness_per_curve),
            "smoothness_threshold": SMOOTHNESS_THRESHOLD,
            "smoothness_ok": self.smoothness_ok,
            "smoothness_advice": _SMOOTHNESS_ADVICE[self.smoothness_ok],
        }


def summarize(
    metric: str,
    curves: Mapping[int, tuple[Sequence[int], Sequence[float]]],
    train_steps: int,
) -> VarianceSummary:
    """The variance summary of repeated trainings of one architecture.

    Args:
        metric: The metric the curves hold.
        curves: Trial id -> ``(steps, values)`` of that repeat's evaluation curve, steps in
            training steps (converted to ``training_step_pct`` with ``train_steps``; the
            smoothness does not depend on the unit). Repeats are reported in trial id order.
        train_steps: The steps each repeat trains.

    A NaN or infinite value inside a curve (a failed evaluation) is dropped; a curve without any
    finite value (a repeat that never evaluated) is left out. A repeat's final value is the last
    value of its curve; a curve whose last value is NaN or infinite is refused: that repeat
    diverged, and its last finite value would understate the variance.

    Raises:
        ValueError: Fewer than 2 curves left, a curve ending in NaN, or one with fewer than 2
            distinct steps (naming the trial, and ``budget.evaluations`` to raise).
    """
    kept: list[int] = []
    finals: list[float] = []
    smooth: list[float] = []
    empty: list[int] = []
    for trial_id in sorted(curves):
        steps, values = curves[trial_id]
        x = np.asarray(training_step_pct(steps, train_steps), dtype=float)
        y = np.asarray(list(values), dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"trial {trial_id}: its curve has {x.size} steps but {y.size} values")
        order = np.argsort(x, kind="stable")  # by step; at a repeated step, the last given last
        x, y = x[order], y[order]
        finite = np.isfinite(y)
        if not finite.any():
            empty.append(trial_id)
            continue
        if not finite[-1]:
            raise ValueError(
                f"trial {trial_id}: its last evaluation of {metric} is {y[-1]}: the repeat "
                "diverged, so the proxy task is unstable (lower the learning rate)"
            )
        x, y = x[finite], y[finite]
        try:
            smoothness = curve_smoothness(x, y)
        except ValueError as e:
            raise ValueError(f"trial {trial_id}: {e}") from None
        kept.append(trial_id)
        finals.append(float(y[-1]))
        smooth.append(smoothness)
    if len(kept) < 2:
        detail = f"trials {kept} have curves"
        if empty:
            detail += f"; trials {empty} have no finite evaluation of {metric}"
        raise _repeats_error(len(kept), detail)
    # A mean of 0 (every repeat scored 0: the proxy task learned nothing) has no coefficient of
    # variation; it is reported as undefined and not good, with its own advice.
    cv = coefficient_of_variation(finals) if float(np.mean(finals)) != 0.0 else None
    mean_smoothness = float(np.mean(smooth))
    return VarianceSummary(
        metric=metric,
        final_values=tuple(finals),
        coefficient_of_variation=cv,
        smoothness=mean_smoothness,
        smoothness_per_curve=tuple(smooth),
        variance_ok=cv is not None and cv <= VARIANCE_THRESHOLD,
        smoothness_ok=bool(mean_smoothness <= SMOOTHNESS_THRESHOLD),
        trial_ids=tuple(kept),
    )
