"""Model selection: pick the reference architectures that later judge proxy tasks.

A proxy task (fewer steps, less data) is good if it ranks architectures the way full training
does. To measure that, a handful of reference architectures is trained to completion once; every
candidate proxy task is then scored by the rank correlation between its scores of those models and
their full-training scores. The references must be spread out in (accuracy, latency): a set of
near-identical models says nothing about ranking.

**The tool.** ``START_MODELS`` (30) architectures are sampled and trained towards the full-training
budget in iterations, pruning the set by ``REMOVE_PER_ITERATION`` (5) after each iteration until
``FINAL_MODELS`` (10) are left, which then train to completion. Pruning late and gradually keeps
the cost low (most models only train a few percent of the budget) while the accuracies the
pruning reads are measured on curves that have started to separate.

**The schedule** (``SelectionSchedule``). Iteration ``i`` has ``n_i`` models. If
``n_i <= final`` it trains them to 100 % of the full-training steps; otherwise the cumulative
training percentage grows by ``100 / n_i``, so every iteration costs about one full training in
total: 30 models to 3.33 %, 25 to 7.33 %, 20 to 12.33 %, 15 to 19.0 %, then 10 to 100 %. After an
iteration below 100 %, ``min(remove, n_i - final)`` models are removed. ``SelectionSchedule.steps``
turns the percentages into step targets (rounded up, exact arithmetic).

**The rule** (``crowding_removals``). The models to remove are picked one at a time from the
most crowded place of the (accuracy, latency) plane: both coordinates are min-max normalized over
the current set to ``[0, 1]`` (latency is ignored when no model has one), the globally closest
pair ``(a, b)`` is found, and of the two the one whose *second*-nearest neighbour is closer goes
(it sits in the denser neighbourhood, so the other keeps its region covered). The set is
re-normalized and the next one is picked the same way. Everything is deterministic: ties go to the
smaller ids for the pair and the higher id for the removal. Each model's accuracy is its
score at the iteration's step target (it trains exactly to it).

**Failed trials.** A trial that failed in an iteration counts toward that iteration's removals:
the caller drops it first and asks ``crowding_removals`` only for the rest,
``max(0, removals - failed)`` models.

Pure: the standard library and NumPy only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "FINAL_MODELS",
    "REMOVE_PER_ITERATION",
    "START_MODELS",
    "SelectionSchedule",
    "crowding_removals",
]

#: How many reference architectures model selection samples and starts training.
START_MODELS: int = 30
#: How many it keeps and trains to completion.
FINAL_MODELS: int = 10
#: How many it removes after each iteration (at most; never below ``FINAL_MODELS``).
REMOVE_PER_ITERATION: int = 5

#: Distances are rounded to this many decimals before comparing them, so that ties that are exact
#: on paper stay ties in floating point (normalized distances lie in ``[0, sqrt(2)]``).
_DISTANCE_DECIMALS = 12


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_iterations(start: int, final: int, remove: int) -> list[tuple[int, Fraction]]:
    """The schedule in exact arithmetic; assumes valid integer parameters."""
    out: list[tuple[int, Fraction]] = []
    n, pct = start, Fraction(0)
    while n > final:
        pct += Fraction(100, n)
        out.append((n, pct))
        n -= min(remove, n - final)
    out.append((n, Fraction(100)))
    return out


def _reaches_full_early(start: int, final: int, remove: int) -> bool:
    return any(pct >= 100 for _, pct in _exact_iterations(start, final, remove)[:-1])


def _steps_for(pcts: Sequence[Fraction], full_steps: int) -> tuple[int, ...]:
    return tuple(math.ceil(pct * full_steps / 100) for pct in pcts)


def _increasing(values: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


@dataclasses.dataclass(frozen=True)
class SelectionSchedule:
    """How many models each iteration of model selection trains, and how far.

    Attributes:
        start: Models sampled and trained in the first iteration.
        final: Models kept and trained to completion (at least 2, for a rank correlation).
        remove: Models removed after each iteration below 100 % (fewer when that would leave
            fewer than ``final``).
    """

    start: int = START_MODELS
    final: int = FINAL_MODELS
    remove: int = REMOVE_PER_ITERATION

    def problems(self, where: str = "model selection") -> list[str]:
        """What is wrong with this schedule.

        Args:
            where: Names the schedule in the messages (e.g. the spec field it came from).

        Returns:
            One message per problem, each naming the parameter and saying what to change; empty
            if the schedule is valid.
        """
        out = []
        names = {"start": "start models", "final": "final models", "remove": "models removed"}
        for field, label in names.items():
            value = getattr(self, field)
            if not _is_int(value):
                out.append(
                    f"{where}: {label} must be an integer, got {value!r}: set {field} to a "
                    f"whole number"
                )
        if out:
            return out
        if self.final < 2:
            out.append(
                f"{where}: final models {self.final} must be at least 2: a rank correlation "
                f"needs two models or more; raise final"
            )
        if self.start <= self.final:
            out.append(
                f"{where}: final models {self.final} must be fewer than the start models "
                f"{self.start}: raise start above {self.final} or lower final below {self.start}"
            )
        if self.remove < 1:
            out.append(
                f"{where}: models removed per iteration {self.remove} must be at least 1: "
                f"raise remove"
            )
        if out:
            return out
        if _reaches_full_early(self.start, self.final, self.remove):
            enough = next(
                r
                for r in range(self.remove + 1, self.start - self.final + 1)
                if not _reaches_full_early(self.start, self.final, r)
            )
            out.append(
                f"{where}: models removed per iteration {self.remove} is too few to prune "
                f"{self.start} start models to {self.final}: the cumulative training percentage "
                f"reaches 100 % before the last iteration; raise remove to at least {enough} or "
                f"lower start"
            )
        return out

    def _checked(self) -> list[tuple[int, Fraction]]:
        if problems := self.problems():
            raise ValueError("invalid model selection schedule: " + "; ".join(problems))
        return _exact_iterations(self.start, self.final, self.remove)

    def iterations(self) -> tuple[tuple[int, float], ...]:
        """Each iteration's model count and cumulative training percentage.

        Returns:
            ``(models, pct)`` per iteration, in order; the last is ``(final, 100.0)``.

        Raises:
            ValueError: The schedule is invalid (the message lists ``problems()``).
        """
        return tuple((n, float(pct)) for n, pct in self._checked())

    def steps(self, full_steps: int) -> tuple[int, ...]:
        """Each iteration's training step target for a full training of ``full_steps`` steps.

        Args:
            full_steps: The full-training budget in steps.

        Returns:
            ``ceil(pct / 100 * full_steps)`` per iteration (exact arithmetic): strictly increasing,
            the last equal to ``full_steps``.

        Raises:
            ValueError: The schedule is invalid, ``full_steps`` is not a positive integer, or it
                is too small for two iterations to get different step targets (the message names
                the smallest ``full_steps`` from which every value works).
        """
        pcts = [pct for _, pct in self._checked()]
        if not _is_int(full_steps) or full_steps < 1:
            raise ValueError(f"full_steps must be a positive integer, got {full_steps!r}")
        out = _steps_for(pcts, full_steps)
        if _increasing(out):
            return out
        # Every value at least 1 / (smallest percentage gap) separates all iterations; scan down
        # from there for the smallest value from which every value works.
        gaps = [b - a for a, b in zip([Fraction(0), *pcts], pcts, strict=False)]
        minimum = math.ceil(100 / min(gaps))
        while minimum > 1 and _increasing(_steps_for(pcts, minimum - 1)):
            minimum -= 1
        raise ValueError(
            f"full_steps {full_steps} is too small for model selection from {self.start} to "
            f"{self.final} models: two iterations would train to the same step {out}; use "
            f"full_steps of at least {minimum}, or fewer iterations (raise remove or lower start)"
        )


def _normalized(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def crowding_removals(
    points: Mapping[int, tuple[float, float | None]], count: int, keep_at_least: int = 2
) -> list[int]:
    """Which models to remove so that the rest stay spread out in accuracy and latency.

    Removes one at a time: both coordinates are min-max normalized over the current set to
    ``[0, 1]`` (a constant coordinate becomes 0; without latencies, accuracy alone counts); the
    globally closest pair ``(a, b)`` is found (ties: the lexicographically smaller id pair), and
    whichever of ``a`` and ``b`` has the smaller distance to its second-nearest neighbour is removed
    (ties: the higher id). Then the set is re-normalized and the next one is picked.

    Args:
        points: Trial id -> ``(accuracy, latency)``; latency ``None`` for every trial or for none.
        count: How many to remove.
        keep_at_least: Never remove below this many; fewer than ``count`` are removed if needed.

    Returns:
        The removed trial ids, in removal order.

    Raises:
        ValueError: ``count`` is negative, ``keep_at_least`` is below 1, a coordinate is not
            finite, or some trials have a latency and others none (the message names the ones
            without).
    """
    if not _is_int(count) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if not _is_int(keep_at_least) or keep_at_least < 1:
        raise ValueError(f"keep_at_least must be a positive integer, got {keep_at_least!r}")
    ids = sorted(points)
    missing = [i for i in ids if points[i][1] is None]
    if missing and len(missing) < len(ids):
        raise ValueError(
            f"trials {missing} have no latency while the others have one: measure their latency "
            f"or drop it for every trial"
        )
    accuracy = np.array([float(points[i][0]) for i in ids], dtype=float)
    latency = np.array([points[i][1] or 0.0 for i in ids], dtype=float)
    bad = [
        i for i, a, t in zip(ids, accuracy, latency, strict=True) if not np.isfinite([a, t]).all()
    ]
    if bad:
        raise ValueError(f"trials {bad} have a non-finite accuracy or latency")

    removed: list[int] = []
    while len(removed) < count and len(ids) > keep_at_least and len(ids) >= 2:
        xy = np.stack([_normalized(accuracy), _normalized(latency)], axis=1)
        dist = np.round(
            np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1), _DISTANCE_DECIMALS
        )
        np.fill_diagonal(dist, np.inf)
        ordered = np.sort(dist, axis=1)
        second = ordered[:, 1] if len(ids) >= 3 else np.full(len(ids), np.inf)
        # Row-major argmin over the upper triangle: the first minimum has the smallest (a, b).
        upper = np.where(np.triu(np.ones_like(dist, dtype=bool), k=1), dist, np.inf)
        a, b = divmod(int(np.argmin(upper)), len(ids))
        drop = a if second[a] < second[b] else b  # b has the higher id: it goes on a tie
        removed.append(ids[drop])
        del ids[drop]
        accuracy = np.delete(accuracy, drop)
        latency = np.delete(latency, drop)
    return removed
