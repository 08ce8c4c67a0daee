"""Rank statistics of trials: the Pareto front of quality against cost, and Kendall's tau.

Reports plot the front and the proxy-vs-full rank correlation; the handoff records the
correlation. Pure functions of numbers (SciPy for tau), cheap to import: SciPy is imported on the
first correlation (``scipy.stats`` takes about a second, and every pipeline step, trial and
measurement process imports this module through ``kfnas.stages``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the points no other point dominates, maximizing x and minimizing y.

    Point ``j`` dominates ``i`` if ``x_j >= x_i`` and ``y_j <= y_i`` with one inequality strict;
    equal points do not dominate each other, so duplicates on the front are all kept. Points with
    a NaN coordinate are never on the front.

    Args:
        points: ``(quality, cost)`` pairs, e.g. ``(AP, latency_ms)``.

    Returns:
        Indices into ``points``, ascending.
    """
    valid = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]

    def dominated(i: int) -> bool:
        xi, yi = points[i]
        return any(
            points[j][0] >= xi and points[j][1] <= yi and (points[j][0] > xi or points[j][1] < yi)
            for j in valid
        )

    return [i for i in valid if not dominated(i)]


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's rank correlation (tau-b, ``scipy.stats.kendalltau``) of two paired sequences.

    Returns:
        Tau in [-1, 1]; ``None`` for fewer than 2 pairs or when it is undefined (a side all tied).

    Raises:
        ValueError: ``xs`` and ``ys`` differ in length.
    """
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau needs paired values, got {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        return None
    tau = float(kendall_tau_result(xs, ys).statistic)
    return None if math.isnan(tau) else tau


def kendall_tau_result(xs: Sequence[float], ys: Sequence[float]) -> Any:
    """``scipy.stats.kendalltau(xs, ys)``: tau-b with its p-value, SciPy imported on first use."""
    from scipy import stats

    return stats.kendalltau(xs, ys)
