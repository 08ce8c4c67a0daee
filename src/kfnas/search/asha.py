"""Asynchronous successive halving (ASHA): which finished trial to train further, and how far.

The schedule (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning",
Algorithm 2). A ``HalvingSchedule`` has rungs of growing training budgets: rung ``k`` trains to
``r_k = min_steps * eta**k`` steps for ``k = 0..K``, where ``eta`` is the reduction factor and the
top rung's budget ``r_K = R`` is the study's ``budget.train_steps``. Every new architecture first
trains to rung 0. Whenever a slot frees, the controller asks ``promotions`` first: from the highest
rung down, it looks for a trial that finished rung ``k``, ranks among the top ``floor(n_k / eta)``
of the ``n_k`` trials finished at rung ``k`` (higher metric values are better; ties go to the
lower trial id) and was not promoted yet; such a trial is promoted to rung ``k + 1``. Only when
nothing can be promoted does the controller start a new architecture at rung 0. Nothing waits for
a rung to fill, so no slot idles while there is work.

What the schedule keeps (and what it does not):

* A promotion continues from the parent's checkpoint, so it costs ``r_{k+1} - r_k`` steps, not
  ``r_{k+1}``: an architecture that reaches the top rung has trained ``R`` steps in all, the same as
  without halving.
* Every promotion out of rung ``k`` was, when it was made, into the top ``floor(n_k / eta)`` of the
  trials finished at rung ``k`` then; so nothing is promoted out of a rung with fewer than ``eta``
  finished trials.
* The number of trials promoted out of rung ``k`` (hence the number that reach rung ``k + 1``
  from it) is at most ``max(0, n_k - eta + 1)``, not ``floor(n_k / eta)``: being asynchronous,
  ASHA promotes a trial that is in the top ``1/eta`` *so far*, and later trials may push it out
  (a "mispromotion"). When results arrive in increasing order every trial after the first
  ``eta - 1`` is promoted, which reaches that bound. The ``eta - 1`` worst trials of a rung are
  never promoted: each promoted trial had at least ``n - floor(n / eta) >= eta - 1`` worse trials
  below it when it was promoted. For results in random order the paper shows mispromotions grow
  only as ``sqrt(n_k)``, so ``n_{k+1} / n_k`` tends to ``1 / eta``. Synchronous successive halving's
  ``n_{k} <= floor(n_0 / eta**k)`` therefore does not hold here.
* Once no new trials arrive at rung ``k``, repeated calls promote every trial of the final top
  ``floor(n_k / eta)`` that was not promoted yet: the best architecture of a rung that keeps at
  least ``eta`` finished trials always moves on.
* A trial without a usable result (failed, infeasible, NaN) counts among the ``n_k`` finished
  trials of its rung, ranked below every value (as if it scored minus infinity), and is never
  promoted. A promoted trial is a new record at rung ``k + 1``: its value is ranked in rung
  ``k + 1`` only, and its parent, promoted once, is never promoted again, whatever became of the
  child.

Everything here is a pure function of the trials it is given (the controller rebuilds them from
the study's records on every call), so a restarted controller makes the same decisions.

To extend: a different promotion rule (e.g. one that also stops rung-0 starts after a trial
count, or promotes by a reward instead of the metric) is a new function with the same arguments as
``promotions``; the controller feeds it ``RungTrial`` records whose ``value`` is whatever that rule
ranks by. A new schedule check belongs in ``HalvingSchedule.problems``, worded like the others:
name the field and say which value would fit.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["HalvingSchedule", "RungTrial", "promotions", "rung_table"]

# Rung lists longer than this are shortened in messages (the first three and the last two).
_MAX_LISTED_RUNGS = 8


@dataclasses.dataclass(frozen=True)
class HalvingSchedule:
    """The rungs of a successive-halving study.

    Attributes:
        min_steps: Training steps of rung 0, the budget every new architecture trains first.
        max_steps: Training steps of the top rung (the study's ``budget.train_steps``); must be
            ``min_steps * reduction_factor**K`` for an integer ``K >= 1``.
        reduction_factor: ``eta``: each rung promotes the best ``1/eta`` of its trials to a budget
            ``eta`` times larger.
    """

    min_steps: int
    max_steps: int
    reduction_factor: int = 3

    @property
    def rungs(self) -> tuple[int, ...]:
        """Steps per rung: ``min_steps * eta**k`` for ``k = 0..K``; the last is ``max_steps``.

        Raises:
            ValueError: The schedule is invalid (the message lists every problem).
        """
        if problems := self.problems():
            raise ValueError("invalid halving schedule: " + "; ".join(problems))
        return tuple(_ladder(int(self.min_steps), int(self.reduction_factor), int(self.max_steps)))

    def rung_of(self, steps: int) -> int:
        """The index of the rung whose budget is ``steps``.

        Args:
            steps: A trial's training steps.

        Returns:
            ``k`` such that ``rungs[k] == steps``.

        Raises:
            ValueError: ``steps`` is no rung's budget (the message names the rungs), or the
                schedule is invalid.
        """
        rungs = self.rungs
        if isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps in rungs:
            return rungs.index(int(steps))
        raise ValueError(
            f"{steps!r} training steps is no rung of this halving schedule "
            f"(rungs {_listed(list(rungs))} steps)"
        )

    def problems(self, where: str = "multi_fidelity") -> list[str]:
        """What is wrong with this schedule, as messages that say what to change.

        Args:
            where: Where the spec holds ``min_steps`` and ``reduction_factor``; ``max_steps`` is
                named ``budget.train_steps`` in the messages.

        Returns:
            One message per problem; empty if the schedule is valid.
        """
        train = "budget.train_steps"
        out = [
            message
            for message in (
                _integer_problem(f"{where}.min_steps", self.min_steps, 1, 20),
                _integer_problem(train, self.max_steps, 1, 180),
                _integer_problem(
                    f"{where}.reduction_factor",
                    self.reduction_factor,
                    2,
                    3,
                    why=" (each rung promotes its best 1/reduction_factor; 3 or 4 is usual)",
                ),
            )
            if message
        ]
        if out:
            return out
        low, high, eta = int(self.min_steps), int(self.max_steps), int(self.reduction_factor)
        ladder = _ladder(low, eta, high)
        if ladder[-1] == high and len(ladder) >= 2:
            return []
        if high <= low:
            lead = (
                f"{train} {high} is not longer than {where}.min_steps {low}: a halving schedule "
                f"needs at least two rungs (train_steps = min_steps x reduction_factor**K with "
                f"K >= 1); "
            )
        else:
            lead = (
                f"{train} {high} does not fit a halving schedule from {where}.min_steps {low} "
                f"with {where}.reduction_factor {eta} (rungs {_listed(ladder)}): "
            )
        fixes = [f"set train_steps to {_either(_fitting_train_steps(low, eta, high))}"]
        if mins := _fitting_min_steps(low, eta, high):
            fixes.append(f"min_steps to {_either(mins)} (train_steps / {eta}**K)")
        if factors := _fitting_factors(low, eta, high):
            fixes.append(f"reduction_factor to {_either(factors)}")
        return [lead + ", or ".join(fixes)]

    @classmethod
    def checked(
        cls,
        min_steps: int,
        max_steps: int,
        reduction_factor: int = 3,
        where: str = "multi_fidelity",
    ) -> HalvingSchedule:
        """A schedule, checked.

        Args:
            min_steps: Training steps of rung 0.
            max_steps: Training steps of the top rung (the study's ``budget.train_steps``).
            reduction_factor: ``eta``.
            where: Where the spec holds ``min_steps`` and ``reduction_factor`` (for messages).

        Returns:
            The schedule.

        Raises:
            ValueError: It is invalid; the message joins every problem with ``"; "``.
        """
        schedule = cls(min_steps, max_steps, reduction_factor)
        if problems := schedule.problems(where):
            raise ValueError("; ".join(problems))
        return schedule


@dataclasses.dataclass(frozen=True)
class RungTrial:
    """One trial as the halving schedule sees it.

    Attributes:
        trial_id: The trial's id, unique in the study; lower ids win ties.
        rung: The rung it trains to (``schedule.rung_of(its train steps)``).
        value: The finished trial's metric (higher is better); None while it runs, or when it
            failed or was infeasible (such a trial is never promoted).
        finished: Whether it has a result (COMPLETED, FAILED or INFEASIBLE).
        promoted_from: The trial this one continues from (a promotion); None for a new
            architecture.
    """

    trial_id: int
    rung: int
    value: float | None
    finished: bool
    promoted_from: int | None = None


def promotions(
    schedule: HalvingSchedule, trials: Sequence[RungTrial], n: int
) -> list[tuple[int, int]]:
    """Up to ``n`` promotions, in the order ASHA makes them.

    Args:
        schedule: The study's halving schedule.
        trials: Every trial of the study so far (running, finished and promoted ones).
        n: How many free slots to fill; at most this many promotions are returned.

    Returns:
        ``(parent trial id, rung to train to)`` pairs: highest rung first, best value first within
        a rung (ties: lower trial id). Each parent appears once, was not promoted before, finished
        its rung with a value that is not NaN and ranks in the top ``floor(n_k / eta)`` of the
        ``n_k`` trials finished at its rung ``k``; no trial of the top rung is promoted. Fewer
        than ``n`` (possibly none) when no more qualify: start new architectures at rung 0.

    Raises:
        ValueError: The schedule is invalid, a trial id repeats, or a trial's rung is not one of
            the schedule's.
    """
    rungs = schedule.rungs
    eta = int(schedule.reduction_factor)
    by_rung = _by_rung(rungs, trials)
    promoted = _promoted_parents(trials)
    out: list[tuple[int, int]] = []
    for k in range(len(rungs) - 2, -1, -1):
        if len(out) >= n:
            break
        finished = [trial for trial in by_rung[k] if trial.finished]
        top = sorted(finished, key=_rank)[: len(finished) // eta]
        for trial in top:
            if len(out) >= n:
                break
            if _usable(trial.value) and trial.trial_id not in promoted:
                out.append((trial.trial_id, k + 1))
    return out


def rung_table(schedule: HalvingSchedule, trials: Sequence[RungTrial]) -> list[dict[str, Any]]:
    """Per-rung counts for reports and logs.

    Args:
        schedule: The study's halving schedule.
        trials: Every trial of the study so far.

    Returns:
        One dict per rung, lowest first: ``rung`` (its index), ``steps`` (its budget), ``started``
        (trials at the rung, running or finished), ``finished`` (those with a result),
        ``promoted`` (those some trial continues) and ``best`` (the highest usable value, or None).

    Raises:
        ValueError: As ``promotions``.
    """
    rungs = schedule.rungs
    by_rung = _by_rung(rungs, trials)
    promoted = _promoted_parents(trials)
    table = []
    for k, steps in enumerate(rungs):
        at_rung = by_rung[k]
        values = [t.value for t in at_rung if t.finished and _usable(t.value)]
        table.append(
            {
                "rung": k,
                "steps": steps,
                "started": len(at_rung),
                "finished": sum(1 for t in at_rung if t.finished),
                "promoted": sum(1 for t in at_rung if t.trial_id in promoted),
                "best": max(values) if values else None,
            }
        )
    return table


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _rank(trial: RungTrial) -> tuple[int, float, int]:
    # Usable values first, best first; failed, infeasible and NaN trials last; ties: lower id.
    value = trial.value
    if value is not None and not math.isnan(value):
        return (0, -value, trial.trial_id)
    return (1, 0.0, trial.trial_id)


def _promoted_parents(trials: Sequence[RungTrial]) -> set[int]:
    return {t.promoted_from for t in trials if t.promoted_from is not None}


def _by_rung(rungs: tuple[int, ...], trials: Sequence[RungTrial]) -> list[list[RungTrial]]:
    by_rung: list[list[RungTrial]] = [[] for _ in rungs]
    seen: set[int] = set()
    for trial in trials:
        if trial.trial_id in seen:
            raise ValueError(f"trial {trial.trial_id} appears twice in the trials given")
        seen.add(trial.trial_id)
        if not 0 <= trial.rung < len(rungs):
            raise ValueError(
                f"trial {trial.trial_id} is at rung {trial.rung}, but the halving schedule has "
                f"rungs 0 to {len(rungs) - 1} ({_listed(list(rungs))} steps)"
            )
        by_rung[trial.rung].append(trial)
    return by_rung


def _integer_problem(name: str, value: object, least: int, example: int, why: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return (
            f"{name} must be an integer of at least {least}, got {value!r} "
            f"({type(value).__name__}); write a whole number, e.g. {example}"
        )
    if value < least:
        return f"{name} must be an integer of at least {least}{why}, got {value}"
    return ""


def _ladder(low: int, eta: int, high: int) -> list[int]:
    """``low * eta**k`` for k = 0, 1, ... up to the first that reaches ``high`` (at least two)."""
    out = [low, low * eta]
    while out[-1] < high:
        out.append(out[-1] * eta)
    return out


def _fitting_train_steps(low: int, eta: int, high: int) -> list[int]:
    """The fitting top budgets nearest ``high``: the largest below it and the smallest above."""
    fits = _ladder(low, eta, high)[1:]
    below = [steps for steps in fits if steps < high]
    above = [steps for steps in fits if steps > high]
    return [*below[-1:], *above[:1]]


def _fitting_min_steps(low: int, eta: int, high: int) -> list[int]:
    """Rung-0 budgets fitting ``high`` nearest ``low``: the largest below, the smallest above."""
    fits = []
    power = eta
    while power <= high:
        if high % power == 0:
            fits.append(high // power)
        power *= eta
    below = sorted(m for m in fits if m < low)
    above = sorted(m for m in fits if m > low)
    return [*below[-1:], *above[:1]]


def _fitting_factors(low: int, eta: int, high: int) -> list[int]:
    """Reduction factors that fit ``low`` and ``high`` (up to two, nearest ``eta`` first)."""
    if high <= low or high % low:
        return []
    ratio = high // low
    fits = set()
    for power in range(1, ratio.bit_length() + 1):
        root = round(ratio ** (1 / power))
        fits.update(r for r in (root - 1, root, root + 1) if r >= 2 and r**power == ratio)
    return sorted(sorted(fits, key=lambda r: (abs(r - eta), r))[:2])


def _either(values: list[int]) -> str:
    return " or ".join(str(v) for v in values)


def _listed(values: list[int]) -> str:
    if len(values) > _MAX_LISTED_RUNGS:
        return ", ".join([*map(str, values[:3]), "...", *map(str, values[-2:])])
    return ", ".join(str(v) for v in values)
