"""The proxy-task search's arithmetic: candidate proxy settings and how well each ranks models.

A *proxy task* (fewer steps, smaller images, a smaller model, less data) is worth searching with
only if it ranks architectures as full training does. The proxy-task search (Vertex AI NAS's
proxy-task search controller) retrains the reference models of a model selection, whose full-
training scores are known, under each candidate setting, and follows Kendall's rank correlation
between their proxy scores and their full-training scores as they train.

* **Candidates** (``parse_grid``): the user's grid, YAML or JSON. Either a mapping of spec
  override keys to lists of values (every combination is a candidate)::

      task.image_size: [64, 96]
      studies.proxy.budget.train_steps: [200, 400]

  or a list of candidates, each a mapping of override keys to values, with an optional ``name``.

* **Tracking** (``track``): at each step some model evaluated at, the models with a value there
  (``value_at(..., "last")``: trained that far) pair their proxy value with their full-training
  score. With at least ``MIN_PAIRS`` pairs that are at least ``MIN_FRACTION`` of the reference
  models, the step gets Kendall's tau (tau-b) and its p-value, the median proxy value (the sorted
  values' element at index ``n // 2``, as Vertex AI NAS reads it) and the median model's training
  time at that step (seconds of pure training, from its curve).

* **Stopping** (the first step where one holds, in this order): tau at least the target
  correlation (``met_correlation``); the median value at least the target metric
  (``met_accuracy``); the median time at least the time limit (``exceeded_time_limit``); the
  median time at least the best successful candidate's time (``slower_than_best``). For the two
  successes, the crossing is interpolated linearly between the previous step and this one to give
  the steps and seconds the proxy needs. A candidate whose curves end without any is ``not_met``.
  When the models' latencies are known on both sides, a latency correlation below its target
  turns a success into ``failed_latency_correlation``.

* **The stopping rule** ``proxy_target`` (``PROXY_TARGET``, in ``kfnas.search.stopping``'s
  registry): the candidate's trials carry it, so each trial stops itself at the first evaluation
  where the candidate has met its target (as far as the other trials' stored curves show) or its
  own training time passed the candidate's limit, instead of training on. The search stage reads
  the curves afterwards with ``track``; the rule only saves training.

Pure Python and SciPy: no TensorFlow. To add a stopping state: give it a name here, decide it in
``_state_at`` (order matters: the first that holds wins), and say in ``SUCCESSES`` whether it
makes the candidate usable.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from kfnas.search.ranking import kendall_tau_result
from kfnas.search.stopping import Curve, StopContext, StoppingRule, value_at

__all__ = [
    "MIN_FRACTION",
    "MIN_PAIRS",
    "PROXY_TARGET",
    "SUCCESSES",
    "CandidateTrack",
    "ProxyCandidate",
    "ProxyTargets",
    "StepStats",
    "best_candidate",
    "parse_grid",
    "step_stats",
    "track",
]

#: The fewest valid (proxy, full-training) pairs a correlation is computed from.
MIN_PAIRS = 5
#: The smallest fraction of the reference models that must be valid at a step.
MIN_FRACTION = 0.7

MET_CORRELATION = "met_correlation"
MET_ACCURACY = "met_accuracy"
EXCEEDED_TIME_LIMIT = "exceeded_time_limit"
SLOWER_THAN_BEST = "slower_than_best"
NOT_MET = "not_met"
FAILED_LATENCY_CORRELATION = "failed_latency_correlation"
#: The states that make a candidate usable as a proxy task.
SUCCESSES = frozenset({MET_CORRELATION, MET_ACCURACY})


@dataclasses.dataclass(frozen=True)
class ProxyCandidate:
    """One proxy setting of the grid.

    Attributes:
        name: Its name (``c1``, ``c2``, ... unless the grid names it).
        settings: Spec override keys and their values, e.g. ``{"task.image_size": 64}``.
    """

    name: str
    settings: dict[str, Any]

    def overrides(self) -> list[str]:
        """The settings as the spec's ``key=value`` overrides (values as JSON, which is YAML)."""
        return [f"{key}={json.dumps(value)}" for key, value in self.settings.items()]


def parse_grid(text: str) -> list[ProxyCandidate]:
    """The candidates of a grid (see the module doc).

    Raises:
        ValueError: The grid is not valid YAML, has no candidates, or is malformed; the message
            says what a grid looks like.
    """
    example = (
        "a grid maps spec keys to lists of values, e.g. {task.image_size: [64, 96], "
        "studies.proxy.budget.train_steps: [200, 400]}, or lists candidates, e.g. "
        "[{name: small, task.image_size: 64}]"
    )
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"the proxy grid is not valid YAML ({e}); {example}") from e
    if isinstance(data, Mapping):
        candidates = _product(data, example)
    elif isinstance(data, list):
        candidates = _listed(data, example)
    elif data is None:
        candidates = []
    else:
        raise ValueError(f"the proxy grid must be a mapping or a list, got {data!r}; {example}")
    if not candidates:
        raise ValueError(f"the proxy grid has no candidates: {example}")
    names = [c.name for c in candidates]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"the proxy grid names {', '.join(duplicates)} more than once")
    return candidates


def _product(data: Mapping[Any, Any], example: str) -> list[ProxyCandidate]:
    if not data:
        return []
    keys = [str(key) for key in data]
    values = []
    for key, options in data.items():
        if not isinstance(options, list) or not options:
            raise ValueError(
                f"the proxy grid's {key!r} must list at least one value, got {options!r}; {example}"
            )
        values.append(options)
    return [
        ProxyCandidate(f"c{i}", dict(zip(keys, combination, strict=True)))
        for i, combination in enumerate(itertools.product(*values), start=1)
    ]


def _listed(data: Sequence[Any], example: str) -> list[ProxyCandidate]:
    out = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, Mapping) or not set(item) - {"name"}:
            raise ValueError(
                f"the proxy grid's candidate {i} must map spec keys to values, got {item!r}; "
                f"{example}"
            )
        settings = {str(k): v for k, v in item.items() if k != "name"}
        out.append(ProxyCandidate(str(item.get("name") or f"c{i}"), settings))
    return out


@dataclasses.dataclass(frozen=True)
class ProxyTargets:
    """When a candidate stops (see the module doc).

    Attributes:
        correlation: Kendall's tau that makes a proxy good (Vertex AI NAS: 0.65).
        accuracy: A median proxy value that makes it good too; ``None``: not used.
        time_limit_s: Seconds of training after which a candidate gives up; ``None``: none.
        best_s: The best successful candidate's seconds so far (a slower one stops); ``None``.
        latency_correlation: The latency tau a success needs when latencies are known on both
            sides; ``None``: not checked.
    """

    correlation: float = 0.65
    accuracy: float | None = None
    time_limit_s: float | None = None
    best_s: float | None = None
    latency_correlation: float | None = 0.65


@dataclasses.dataclass(frozen=True)
class StepStats:
    """How a candidate ranks the reference models at one step.

    Attributes:
        step: The training step.
        pairs: Models with a value at the step and a full-training score.
        correlation: Kendall's tau; ``None`` with too few pairs or when undefined (all tied).
        p_value: Its two-sided p-value.
        median_value: The median proxy value of the valid models.
        median_seconds: The median model's training seconds at the step; ``None`` if unknown.
    """

    step: int
    pairs: int
    correlation: float | None
    p_value: float | None
    median_value: float | None
    median_seconds: float | None


def _enough(pairs: int, models: int) -> bool:
    return pairs >= MIN_PAIRS and pairs >= MIN_FRACTION * models


def step_stats(
    step: int,
    values: Mapping[int, Curve],
    seconds: Mapping[int, Curve],
    reference: Mapping[int, float],
) -> StepStats:
    """The statistics at ``step`` (see the module doc).

    Args:
        step: The step.
        values: Each model's proxy curve, by model (trial) id.
        seconds: Each model's training seconds at its evaluations, by the same ids.
        reference: Each model's full-training score, by the same ids.
    """
    valid = _pairs(step, values, reference)
    tau = p_value = median = median_s = None
    if _enough(len(valid), len(reference)):
        result = kendall_tau_result([v for _, v, _ in valid], [s for _, _, s in valid])
        if not math.isnan(result.statistic):
            tau, p_value = float(result.statistic), float(result.pvalue)
        model, median, _ = sorted(valid, key=lambda item: item[1])[len(valid) // 2]
        median_s = value_at(seconds.get(model, ()), step, "last")
    return StepStats(step, len(valid), tau, p_value, median, median_s)


@dataclasses.dataclass(frozen=True)
class CandidateTrack:
    """A candidate's statistics over training and why it stopped.

    Attributes:
        stats: One ``StepStats`` per step any model evaluated at, in order.
        state: ``met_correlation``, ``met_accuracy``, ``exceeded_time_limit``,
            ``slower_than_best``, ``not_met`` or ``failed_latency_correlation``.
        stop_step: The step it was decided at; ``None`` for ``not_met``.
        final_steps: For a success, the steps the proxy needs (interpolated).
        final_seconds: For a success, the training seconds it needs (interpolated).
        latency_correlation: Kendall's tau of proxy and full-training latencies, if known.
        scores_step: The step ``scores`` are read at: ``stop_step``, else the last step with a
            correlation; ``None`` if none had one.
        scores: ``(model, proxy value, full-training score)`` of the valid models at
            ``scores_step``: how the proxy ranked them where it was judged.
    """

    stats: tuple[StepStats, ...]
    state: str
    stop_step: int | None = None
    final_steps: float | None = None
    final_seconds: float | None = None
    latency_correlation: float | None = None
    scores_step: int | None = None
    scores: tuple[tuple[int, float, float], ...] = ()

    @property
    def succeeded(self) -> bool:
        """Whether the candidate is usable as a proxy task."""
        return self.state in SUCCESSES


def _state_at(stat: StepStats, targets: ProxyTargets) -> str:
    if stat.correlation is not None and stat.correlation >= targets.correlation:
        return MET_CORRELATION
    median = stat.median_value
    if targets.accuracy is not None and median is not None and median >= targets.accuracy:
        return MET_ACCURACY
    if stat.median_seconds is not None:
        if targets.time_limit_s is not None and stat.median_seconds >= targets.time_limit_s:
            return EXCEEDED_TIME_LIMIT
        if targets.best_s is not None and stat.median_seconds >= targets.best_s:
            return SLOWER_THAN_BEST
    return ""


def _crossing(
    previous: StepStats | None, current: StepStats, state: str, targets: ProxyTargets
) -> tuple[float, float | None]:
    """Steps and seconds where the target was crossed, linear between two steps."""
    if state == MET_CORRELATION:
        target, now, before = targets.correlation, current.correlation, None
        before = previous.correlation if previous is not None else None
    else:
        target, now = targets.accuracy, current.median_value
        before = previous.median_value if previous is not None else None
    assert target is not None and now is not None
    if previous is None or before is None or before >= target or now == before:
        return float(current.step), current.median_seconds
    fraction = (target - before) / (now - before)
    steps = previous.step + fraction * (current.step - previous.step)
    if previous.median_seconds is None or current.median_seconds is None:
        return steps, current.median_seconds
    seconds = previous.median_seconds + fraction * (
        current.median_seconds - previous.median_seconds
    )
    return steps, seconds


def track(
    values: Mapping[int, Curve],
    seconds: Mapping[int, Curve],
    reference: Mapping[int, float],
    targets: ProxyTargets,
    latencies: tuple[Mapping[int, float], Mapping[int, float]] | None = None,
) -> CandidateTrack:
    """A candidate's statistics over its steps and its stopping state (see the module doc).

    Args:
        values: Each model's proxy curve, by model id.
        seconds: Each model's training seconds at its evaluations.
        reference: Each model's full-training score.
        targets: When to stop.
        latencies: ``(proxy, full-training)`` latencies by model id, when measured.
    """
    steps = sorted({step for curve in values.values() for step, _ in curve})
    table = tuple(step_stats(step, values, seconds, reference) for step in steps)
    state, stop_step, final_steps, final_seconds = NOT_MET, None, None, None
    previous: StepStats | None = None
    for stat in table:
        found = _state_at(stat, targets)
        if found:
            state, stop_step = found, stat.step
            if found in SUCCESSES:
                final_steps, final_seconds = _crossing(previous, stat, found, targets)
            break
        if stat.median_value is not None:  # enough models at this step
            previous = stat
    latency_tau = None
    if latencies is not None:
        proxy, full = latencies
        common = sorted(set(proxy) & set(full))
        if _enough(len(common), len(reference)):
            result = kendall_tau_result([proxy[m] for m in common], [full[m] for m in common])
            latency_tau = None if math.isnan(result.statistic) else float(result.statistic)
    wanted = targets.latency_correlation
    known = wanted is not None and latency_tau is not None
    if state in SUCCESSES and known and latency_tau < wanted:  # type: ignore[operator]
        state = FAILED_LATENCY_CORRELATION
    judged = [stat.step for stat in table if stat.correlation is not None]
    at = stop_step if stop_step is not None else (judged[-1] if judged else None)
    scores = () if at is None else tuple(_pairs(at, values, reference))
    return CandidateTrack(
        table, state, stop_step, final_steps, final_seconds, latency_tau, at, scores
    )


def _pairs(
    step: int, values: Mapping[int, Curve], reference: Mapping[int, float]
) -> list[tuple[int, float, float]]:
    """``(model, proxy value, full-training score)`` of the models valid at ``step``."""
    out = []
    for model, score in sorted(reference.items()):
        value = value_at(values.get(model, ()), step, "last")
        if value is not None and math.isfinite(value) and math.isfinite(score):
            out.append((model, value, score))
    return out


def best_candidate(tracks: Mapping[str, CandidateTrack]) -> str | None:
    """The successful candidate needing the fewest training seconds (then steps); ``None``."""
    done = [(name, t) for name, t in tracks.items() if t.succeeded]
    if not done:
        return None

    def cost(item: tuple[str, CandidateTrack]) -> tuple[float, float]:
        track_ = item[1]
        seconds = math.inf if track_.final_seconds is None else track_.final_seconds
        return seconds, math.inf if track_.final_steps is None else track_.final_steps

    return min(done, key=cost)[0]


# -- the stopping rule ---------------------------------------------------------------------------


def _targets_of(options: Mapping[str, Any]) -> ProxyTargets:
    return ProxyTargets(
        correlation=float(options["correlation"]),
        accuracy=options["accuracy"],
        time_limit_s=options["seconds"],
    )


def _decide(options: Mapping[str, Any], context: StopContext) -> str:
    reference = {
        i: float(score) for i, score in enumerate(options["reference"]) if score is not None
    }
    values = {**context.by_trial, context.trial_id: context.curve}
    stat = step_stats(context.step, values, {}, reference)
    state = _state_at(stat, dataclasses.replace(_targets_of(options), time_limit_s=None))
    if state == MET_CORRELATION:
        return (
            f"the proxy candidate met its target correlation: Kendall tau {stat.correlation:.3f} "
            f">= {options['correlation']:g} over {stat.pairs} models at step {context.step}"
        )
    if state == MET_ACCURACY:
        return (
            f"the proxy candidate met its target: median value {stat.median_value:.4g} >= "
            f"{options['accuracy']:g} over {stat.pairs} models at step {context.step}"
        )
    limit = options["seconds"]
    if limit is not None and context.seconds is not None and context.seconds >= limit:
        return (
            f"trained {context.seconds:.1f} s by step {context.step}, at or past the proxy "
            f"candidate's time limit of {limit:.1f} s"
        )
    return ""


def _checks(options: Mapping[str, Any]) -> list[str]:
    out = []
    reference = options["reference"]
    if not isinstance(reference, list) or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in reference
    ):
        out.append(
            "reference: must list each trial's full-training score by trial id (null for none)"
        )
    elif sum(v is not None for v in reference) < MIN_PAIRS:
        out.append(f"reference: needs at least {MIN_PAIRS} scores for a rank correlation")
    if not -1 <= options["correlation"] <= 1:
        out.append(f"correlation: must be between -1 and 1, got {options['correlation']}")
    for key in ("accuracy", "seconds"):
        value = options[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value != value
        ):
            out.append(f"{key}: must be a number or null, got {value!r}")
    if isinstance(options["seconds"], int | float) and options["seconds"] <= 0:
        out.append(f"seconds: must be positive, got {options['seconds']}")
    return out


#: The proxy-task search's stopping rule (see the module doc); a trial is fed as any stopped one.
PROXY_TARGET = StoppingRule(
    name="proxy_target",
    description=(
        "Used by the proxy-task search on its candidates' trials: stops a trial once the "
        "candidate's models rank like their full-training scores (Kendall tau >= correlation, or "
        "median value >= accuracy) at its step, or its own training time reaches seconds. The "
        "trial is recorded COMPLETED with stopped_early and the metrics of that evaluation."
    ),
    options={"reference": None, "correlation": 0.65, "accuracy": None, "seconds": None},
    decide=_decide,
    checks=_checks,
)
