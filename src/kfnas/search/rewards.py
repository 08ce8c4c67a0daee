"""Reward functions: pure functions of a trial's metrics and the experiment's objectives.

A reward function has the signature ``fn(metrics, objectives) -> float``, where ``metrics`` maps
names to the trial's measured values (``AP``, ``latency_ms``, ``flops``, ...) and ``objectives`` is
the ``kfnas.config.spec.ObjectiveSpec``. The search maximizes the returned value.

Built-ins:
  * ``metric``: the quality metric alone; constraints are ignored.
  * ``mnas``: MnasNet-style ``metric x factor(c1) x factor(c2) ...``, one factor per constraint:
    hard form ``min(1, target/measured) ** p`` (p = 1: no bonus under the target, proportional
    penalty above it) and soft form ``(target/measured) ** p`` (p = 0.07, MnasNet's w = -0.07 on
    both
    sides of the target).

``objective_vector`` gives multi-objective algorithms (NSGA-II) the quality metric and each
constrained measurement negated, all to be maximized.

To add a reward: write a function here with the signature above and add one line to ``_BUILTINS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kfnas.registry import Registry

if TYPE_CHECKING:
    from kfnas.config.spec import ConstraintSpec, ObjectiveSpec


class RewardError(ValueError):
    """A reward that cannot be computed from the metrics given (a missing or invalid value)."""


def _value(metrics: Mapping[str, float], name: str, *, positive: bool) -> float:
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise RewardError(f"the trial reported no {name!r} metric; it reported: {known}")
    value = float(metrics[name])
    if not math.isfinite(value) or (positive and value <= 0):
        need = "a positive finite number" if positive else "a finite number"
        raise RewardError(f"metric {name!r} must be {need}, got {value}")
    return value


def constraint_factor(metrics: Mapping[str, float], constraint: ConstraintSpec) -> float:
    """The factor one constraint contributes to the reward.

    Args:
        metrics: The trial's measurements; ``constraint.measure`` must be among them.
        constraint: The constraint (measure, target, form and exponent).

    Returns:
        ``min(1, target/measured) ** p`` for the hard form, ``(target/measured) ** p`` for the soft.
    """
    ratio = constraint.target / _value(metrics, constraint.measure, positive=True)
    if constraint.form == "hard":
        ratio = min(1.0, ratio)
    return ratio**constraint.resolved_exponent


def metric_reward(metrics: Mapping[str, float], objectives: ObjectiveSpec) -> float:
    """The quality metric alone."""
    return _value(metrics, objectives.metric, positive=False)


def mnas_reward(metrics: Mapping[str, float], objectives: ObjectiveSpec) -> float:
    """The quality metric times one MnasNet factor per constraint (see the module docstring)."""
    reward = metric_reward(metrics, objectives)
    for constraint in objectives.constraints:
        reward *= constraint_factor(metrics, constraint)
    return reward


def objective_vector(metrics: Mapping[str, float], objectives: ObjectiveSpec) -> tuple[float, ...]:
    """The objectives for multi-objective search, each to be maximized.

    Returns:
        ``(metric, -measured_1, -measured_2, ...)``, one entry per constraint.
    """
    measured = (-_value(metrics, c.measure, positive=True) for c in objectives.constraints)
    return (metric_reward(metrics, objectives), *measured)


_BUILTINS = {
    "metric": "kfnas.search.rewards:metric_reward",
    "mnas": "kfnas.search.rewards:mnas_reward",
}

REWARDS: Registry = Registry("reward", _BUILTINS)


def compute_reward(metrics: Mapping[str, float], objectives: ObjectiveSpec) -> float:
    """The reward named by ``objectives.reward`` for ``metrics``.

    Raises:
        RegistryError: Unknown reward name.
        RewardError: A metric the reward needs is missing or invalid.
    """
    return REWARDS.get(objectives.reward)(metrics, objectives)
