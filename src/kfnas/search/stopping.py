"""Early stopping: the registry ``STOPPING_RULES`` of rules that stop unpromising trials early.

A trial trains for ``train_steps`` steps and evaluates periodically; each evaluation gives the
study's metric (higher is better: AP, accuracy, mIoU). A trial's *curve* is its list of
``(step, value)`` pairs, steps strictly increasing. After each evaluation the trainer asks
``should_stop(rule, options, context)`` whether the trial stops now: ``""`` to go on, else a
human-readable reason. The ``StopContext`` holds the trial's curve and the curves of the study's
other trials (finished and still running). Nothing here keeps state between calls.

Conventions: a NaN value counts as the worst possible value (``-inf``); a curve is a reference at a
step only if it trained that far (its last step is at or after it) and has a point at or before it
(``value_at``). Every rule goes on before ``min_steps`` and never stops at ``step >= train_steps``:
the end of training is not an early stop.

What the search algorithm is fed: a stopped trial is recorded COMPLETED with ``stopped_early`` and
the metrics of its last evaluation. Its reward is computed from those metrics as for any trial, so
the algorithm sees a reward below what the rule compared against (the median rule: below the
finished trials' median at that step) and ranks it accordingly; it is never fed as failed.

Built-ins:
  * ``median`` (Golovin et al. 2017, Google Vizier's median stopping rule): stop if the trial's best
    value so far is below the median of the running averages of the finished trials at that step.
  * ``rank``: stop if the trial's best so far is not within the top ``keep_fraction`` of the best
    so far of the finished and running trials at that step.
  * ``value``: stop if the trial's best so far is below a fixed ``threshold``.
  * ``proxy_target`` (``kfnas.search.proxy_search``): the proxy-task search's candidates stop once
    their models rank like their full-training scores, or at the candidate's time limit.

To add a rule (one function, one record, one line): write ``decide(options, context) -> reason``
(``options`` complete, with the defaults filled in; return ``""`` to go on), wrap it in a
``StoppingRule`` with its options' defaults, a description saying what it stops and what the
algorithm is then fed, and optional ``checks`` for option ranges; then add one line to
``_BUILTINS`` (``"name": "kfnas.search.<module>:RECORD"``). A user's own rule can be registered at
run time: ``STOPPING_RULES.register(name, StoppingRule(...))``.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import operator
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kfnas.registry import Registry

__all__ = [
    "MEDIAN",
    "RANK",
    "STOPPING_RULES",
    "VALUE",
    "Curve",
    "StopContext",
    "StoppingRule",
    "should_stop",
    "stopping_problems",
    "value_at",
]

#: A trial's evaluations: ``(step, value)`` pairs, steps strictly increasing; a NaN value is the
#: worst possible value.
Curve = Sequence[tuple[int, float]]

_HOWS = ("best", "mean", "last")


@dataclasses.dataclass(frozen=True)
class StopContext:
    """What a rule sees when a trial has just evaluated.

    Attributes:
        step: The step of the evaluation just made (the last step of ``curve``).
        train_steps: The trial's full budget of steps.
        curve: This trial's curve so far: non-empty, its last point at ``step``.
        finished: Curves of the study's other COMPLETED trials (including ones stopped early).
        running: Curves of the study's other trials still training.
        trial_id: The trial's id (``-1`` when not known).
        by_trial: The study's other trials' curves (finished and running) by trial id, for rules
            that pair trials with something known per trial (``proxy_target``).
        seconds: The trial's training seconds by ``step``, all attempts together, if known.

    Raises:
        ValueError: ``curve`` is empty, its steps do not strictly increase, or its last step is not
            ``step``.
    """

    step: int
    train_steps: int
    curve: Curve
    finished: Sequence[Curve]
    running: Sequence[Curve] = ()
    trial_id: int = -1
    by_trial: Mapping[int, Curve] = dataclasses.field(default_factory=dict)
    seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.curve:
            raise ValueError(
                "the trial's curve is empty: it must hold at least the evaluation made"
            )
        steps = [point[0] for point in self.curve]
        for a, b in itertools.pairwise(steps):
            if b <= a:
                raise ValueError(
                    f"the trial's curve steps must strictly increase, got step {b} after {a}"
                )
        if steps[-1] != self.step:
            raise ValueError(
                f"the trial's curve ends at step {steps[-1]}, not at the evaluation's step "
                f"{self.step}"
            )


Decide = Callable[[Mapping[str, Any], StopContext], str]


@dataclasses.dataclass(frozen=True)
class StoppingRule:
    """A registered early-stopping rule.

    Attributes:
        name: The registry name, as users write it in the spec's early stopping section.
        description: One paragraph: what it stops, and what the search algorithm is fed for a
            stopped trial.
        options: The options it accepts, with their defaults (read-only). A given value must have
            the type of its option's default (an integer is a fine float; a boolean is never a
            number); an option whose default is None is checked by ``checks`` alone.
        decide: ``(complete options, context) -> reason``: the reason to stop now, ``""`` to go on.
        checks: Range and required-value checks beyond types: ``(complete options) -> problem
            messages``, each starting with the option's name (``"min_trials: ..."``).
    """

    name: str
    description: str
    options: Mapping[str, Any]
    decide: Decide
    checks: Callable[[Mapping[str, Any]], list[str]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))

    def complete(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` with the defaults of the options not given.

        Raises:
            ValueError: An option is unknown (the message lists the known ones).
        """
        if unknown := self._unknown(options):
            raise ValueError("; ".join(unknown))
        return {**self.options, **options}

    def problems(self, options: Mapping[str, Any]) -> list[str]:
        """What is wrong with using this rule with ``options``.

        Args:
            options: The user's options; may be partial (defaults fill the rest).

        Returns:
            One message per problem (unknown option, wrong type, out of range, missing required),
            each starting with the option's name and saying what to change; empty if all is well.
        """
        if not isinstance(options, Mapping):
            return [f"options: must be a mapping of option names to values, got {options!r}"]
        out = self._unknown(options)
        for key, value in options.items():
            if key in self.options and (why := _type_problem(self.options[key], value)):
                out.append(f"{key}: {why}")
        if not out and self.checks is not None:
            out.extend(self.checks(self.complete(options)))
        return out

    def _unknown(self, options: Mapping[str, Any]) -> list[str]:
        known = ", ".join(sorted(self.options)) or "none: it takes no options"
        return [
            f"{key}: unknown option {key!r} for early-stopping rule {self.name!r} (known: {known})"
            for key in sorted((k for k in options if k not in self.options), key=str)
        ]


def _type_problem(default: Any, value: Any) -> str:
    """Why ``value`` cannot stand for an option whose default is ``default`` ("" if it can)."""
    if default is None:
        return ""  # The rule's own checks say what it takes.
    if isinstance(default, bool):
        return "" if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        return ""
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        return ""
    return (
        ""
        if isinstance(value, type(default))
        else f"must be {type(default).__name__}, got {value!r}"
    )


_BUILTINS = {
    "median": "kfnas.search.stopping:MEDIAN",
    "rank": "kfnas.search.stopping:RANK",
    "value": "kfnas.search.stopping:VALUE",
    "proxy_target": "kfnas.search.proxy_search:PROXY_TARGET",
}

STOPPING_RULES: Registry[StoppingRule] = Registry("early-stopping rule", _BUILTINS)


def stopping_problems(
    rule: str, options: Mapping[str, Any], where: str = "early_stopping"
) -> list[str]:
    """What is wrong with an early-stopping section of the spec.

    Args:
        rule: The rule's name.
        options: The user's options for it; may be partial.
        where: Where the spec holds the section, for the messages.

    Returns:
        For an unknown rule, one message listing the known rules (and the closest match); else the
        rule's problems, each prefixed with ``f"{where}.options."``. Empty if all is well.
    """
    if rule not in STOPPING_RULES:
        return [f"{where}: {STOPPING_RULES.unknown_message(rule)}"]
    if not isinstance(options, Mapping):
        return [f"{where}.options: must be a mapping of option names to values, got {options!r}"]
    return [f"{where}.options.{p}" for p in STOPPING_RULES.get(rule).problems(options)]


def should_stop(rule: str, options: Mapping[str, Any], context: StopContext) -> str:
    """Whether a trial that has just evaluated stops now.

    Args:
        rule: The rule's name in ``STOPPING_RULES``.
        options: The user's options for it; may be partial (defaults fill the rest).
        context: The evaluation just made, the trial's curve and the study's other curves.

    Returns:
        ``""`` to go on, else a human-readable reason to stop. Always ``""`` at
        ``context.step >= context.train_steps``: the end of training is not an early stop.

    Raises:
        kfnas.registry.RegistryError: No such rule (the message lists the known rules).
        ValueError: The options are invalid (the message lists every problem).
        TypeError: The rule's ``decide`` returned something other than a string.
    """
    found = STOPPING_RULES.get(rule)
    if problems := found.problems(options):
        raise ValueError(
            f"invalid options for early-stopping rule {rule!r}: " + "; ".join(problems)
        )
    if context.step >= context.train_steps:
        return ""
    reason = found.decide(found.complete(options), context)
    if not isinstance(reason, str):
        raise TypeError(
            f"early-stopping rule {rule!r} returned {reason!r}; decide must return the reason to "
            f"stop or '' to go on"
        )
    return reason


def _score(value: float) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


def value_at(curve: Curve, step: int, how: str = "best") -> float | None:
    """A curve's value at ``step``, from its points at steps ``<= step``.

    NaN values count as ``-inf`` (the worst): ``best`` ignores them unless all are NaN (then
    ``-inf``), while ``mean`` of points including a NaN and ``last`` of a NaN point are ``-inf``.

    Args:
        curve: ``(step, value)`` pairs, steps strictly increasing.
        step: The step to read the curve at.
        how: ``"best"`` (the largest value), ``"mean"`` (the running average) or ``"last"`` (the
            value of the last point at or before ``step``).

    Returns:
        The value, or None when the curve has no point at or before ``step`` or never reached it
        (its last step is before ``step``): a trial that did not train that far is no reference at
        that step.

    Raises:
        ValueError: ``how`` is not one of ``best``, ``mean``, ``last``.
    """
    if how not in _HOWS:
        raise ValueError(f"how must be one of {', '.join(_HOWS)}, got {how!r}")
    if not curve or curve[-1][0] < step:
        return None
    end = bisect.bisect_right(curve, step, key=operator.itemgetter(0))
    if end == 0:
        return None
    if how == "last":
        return _score(curve[end - 1][1])
    values = [_score(curve[i][1]) for i in range(end)]
    if how == "best":
        return max(values)
    if -math.inf in values:
        return -math.inf
    return math.fsum(values) / len(values)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    lo, hi = ordered[(len(ordered) - 1) // 2], ordered[len(ordered) // 2]
    return lo if lo == hi else (lo + hi) / 2


def _references(curves: Sequence[Curve], step: int, how: str) -> list[float]:
    """The values at ``step`` of the curves that reached it."""
    return [v for c in curves if (v := value_at(c, step, how)) is not None]


def _waits(options: Mapping[str, Any], context: StopContext) -> bool:
    """True when no built-in rule may stop: before ``min_steps`` or at the end of training."""
    return context.step < options["min_steps"] or context.step >= context.train_steps


def _best(context: StopContext) -> float:
    best = value_at(context.curve, context.step, "best")
    assert best is not None  # StopContext checks that the curve ends at ``step``.
    return best


def _trials(count: int, what: str) -> str:
    return f"{count} {what} trial" + ("" if count == 1 else "s")


def _median_decide(options: Mapping[str, Any], context: StopContext) -> str:
    if _waits(options, context):
        return ""
    references = _references(context.finished, context.step, "mean")
    if len(references) < options["min_trials"]:
        return ""
    best, median = _best(context), _median(references)
    if not best < median:
        return ""
    return (
        f"median rule: best value {best:.4g} by step {context.step} is below the median "
        f"{median:.4g} of the running averages of {_trials(len(references), 'finished')} at step "
        f"{context.step}"
    )


def _rank_decide(options: Mapping[str, Any], context: StopContext) -> str:
    if _waits(options, context):
        return ""
    finished = _references(context.finished, context.step, "best")
    running = _references(context.running, context.step, "best")
    references = finished + running
    if len(references) < options["min_trials"]:
        return ""
    best = _best(context)
    total = len(references) + 1
    rank = 1 + sum(value > best for value in references)  # Ties in the trial's favour.
    # Rounded so that e.g. 0.3 * 10 keeps 3, not ceil(3.0000000000000004) = 4.
    keep = max(1, math.ceil(round(options["keep_fraction"] * total, 9)))
    if rank <= keep:
        return ""
    return (
        f"rank rule: best value {best:.4g} by step {context.step} ranks {rank} of {total} "
        f"(with {_trials(len(finished), 'finished')} and {_trials(len(running), 'running')} at "
        f"that step), outside the top {keep} (keep_fraction {options['keep_fraction']:g})"
    )


def _value_decide(options: Mapping[str, Any], context: StopContext) -> str:
    if _waits(options, context):
        return ""
    best, threshold = _best(context), options["threshold"]
    if not best < threshold:
        return ""
    return (
        f"value rule: best value {best:.4g} by step {context.step} is below the threshold "
        f"{threshold:g}"
    )


def _count_problem(options: Mapping[str, Any], key: str, minimum: int, hint: str) -> list[str]:
    value = options[key]
    if value < minimum:
        return [
            f"{key}: must be at least {minimum}, got {value}: set it to {minimum} or more{hint}"
        ]
    return []


def _steps_problems(options: Mapping[str, Any]) -> list[str]:
    return _count_problem(options, "min_steps", 0, " (0 lets the rule stop at any evaluation)")


def _trials_problems(options: Mapping[str, Any]) -> list[str]:
    return _count_problem(
        options, "min_trials", 1, " (the reference trials needed before the rule stops any)"
    )


def _median_checks(options: Mapping[str, Any]) -> list[str]:
    return _trials_problems(options) + _steps_problems(options)


def _rank_checks(options: Mapping[str, Any]) -> list[str]:
    out = []
    fraction = options["keep_fraction"]
    if not 0 < fraction < 1:
        out.append(
            f"keep_fraction: must be between 0 and 1 (both excluded), got {fraction}: e.g. 0.5 "
            f"keeps the top half"
        )
    return out + _trials_problems(options) + _steps_problems(options)


def _value_checks(options: Mapping[str, Any]) -> list[str]:
    out = []
    threshold = options["threshold"]
    if threshold is None:
        out.append(
            "threshold: is required: set it to the metric value below which a trial stops "
            "(e.g. 0.1)"
        )
    elif isinstance(threshold, bool) or not isinstance(threshold, int | float):
        out.append(f"threshold: must be a number, got {threshold!r}")
    elif not math.isfinite(threshold):
        out.append(f"threshold: must be a finite number, got {threshold}")
    return out + _steps_problems(options)


_FED = (
    "A stopped trial is recorded COMPLETED with stopped_early and the metrics of its last "
    "evaluation; its reward is computed from them as for any trial, so the search algorithm sees "
    "a reward below {what} and ranks it accordingly; it is never fed as failed."
)

MEDIAN = StoppingRule(
    name="median",
    description=(
        "Google Vizier's median stopping rule (Golovin et al. 2017): at each evaluation from "
        "min_steps on, stops the trial if its best value so far is strictly below the median of "
        "the running averages, up to the same step, of the finished trials that trained at least "
        "that far; with fewer than min_trials such trials it goes on. Running trials are not "
        "references. " + _FED.format(what="the finished trials' median at that step")
    ),
    options={"min_trials": 3, "min_steps": 0},
    decide=_median_decide,
    checks=_median_checks,
)

RANK = StoppingRule(
    name="rank",
    description=(
        "At each evaluation from min_steps on, ranks the trial's best value so far among the best "
        "values, up to the same step, of the finished and running trials that trained at least "
        "that far, and stops it if it is not within the top keep_fraction of them (the top "
        "ceil(keep_fraction x N) of N values counting itself, ties in its favour); with fewer than "
        "min_trials other such trials it goes on. "
        + _FED.format(what="the best values it was ranked below at that step")
    ),
    options={"keep_fraction": 0.5, "min_trials": 3, "min_steps": 0},
    decide=_rank_decide,
    checks=_rank_checks,
)

VALUE = StoppingRule(
    name="value",
    description=(
        "At each evaluation from min_steps on, stops the trial if its best value so far is below "
        "threshold (required), whatever the other trials did. " + _FED.format(what="the threshold")
    ),
    options={"threshold": None, "min_steps": 0},
    decide=_value_decide,
    checks=_value_checks,
)
