"""How a trial reads: the row every trial table shows, and the one-line description.

``trial_row(trial_id, result, metric, spec)`` turns a trial's records into a ``TrialRow`` (id,
round, status, the objective metric, reward, latency, FLOPs, parameters, duration, what it
retrains, why it failed, its multi-fidelity rung and promotion, the steps it trained to and
whether early stopping ended it; ``PENDING`` without a result); ``corrupt_row`` is the row of
a trial whose ``trial.json`` or ``result.json`` cannot be read (``CORRUPT``, with the file and
its repair). ``measure_headers(metric)`` and ``measure_cells(row)`` are the measured columns
every trial table shows (``kfnas search``, ``kfnas run``, ``kfnas trials`` and the report's
candidates tables), formatted once here; ``describe_result`` is the one line ``kfnas run``
prints as trials finish.

To show another measure in every table: add a field to ``TrialRow``, fill it in ``trial_row``
and add its column to ``_MEASURES``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.store.trials import CorruptRecord

#: The status of a proposed trial that has no result yet (queued or running).
PENDING = "PENDING"
#: The status of a trial whose ``trial.json`` or ``result.json`` cannot be read (set aside: the
#: search counts a corrupt result as FAILED and leaves a corrupt spec out).
CORRUPT = "CORRUPT"


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One trial, as trial tables show it.

    Attributes:
        trial_id: The trial's id.
        round: The round that proposed it (0 when unknown).
        status: ``COMPLETED``, ``FAILED``, ``INFEASIBLE``, ``PENDING`` (no result yet) or
            ``CORRUPT`` (a record that cannot be read).
        metric: The objective metric's name.
        value: The objective metric's value, if evaluated.
        reward: The reward, for a completed trial.
        latency_ms: Batch-1 latency (the median of the timed runs), if measured.
        latency_p90_ms: Its 90th percentile: the spread of the timed runs.
        flops: Multiply-adds of one batch-1 inference, if counted.
        params: Number of weights, if counted.
        duration_s: Wall time of the trial (0 while pending).
        source: ``"<study> trial <id>"`` for a retrained copy of another trial, else empty.
        error: Why the trial failed or is infeasible, or which record is corrupt and how to
            repair it; empty otherwise.
        latency_p90_ms: The 90th percentile of the timed runs: their spread.
        rung: Multi-fidelity (``kfnas.search.asha``): the rung the trial trains to; 0 without.
        promoted_from: The trial of the same study it continues (an ASHA promotion), if any.
        steps: The training steps it trained to: the step early stopping stopped it at, else its
            budget's ``train_steps``; 0 when unknown.
        stopped_early: The study's early-stopping rule stopped it (it is ``COMPLETED``).
        stop_reason: The rule's reason, when ``stopped_early``.
    """

    trial_id: int
    round: int
    status: str
    metric: str
    value: float | None
    reward: float | None
    latency_ms: float | None
    flops: float | None
    params: float | None
    duration_s: float
    source: str = ""
    error: str = ""
    latency_p90_ms: float | None = None
    rung: int = 0
    promoted_from: int | None = None
    steps: int = 0
    stopped_early: bool = False
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON-ready data."""
        return dataclasses.asdict(self)


def trial_row(
    trial_id: int, result: TrialResult | None, metric: str, spec: TrialSpec | None = None
) -> TrialRow:
    """The row of one trial: its result (``None``: pending) and, if known, its spec."""
    metrics = result.metrics if result else {}
    source = ""
    if spec is not None and spec.source_study:
        source = f"{spec.source_study} trial {spec.source_trial}"
    stopped = bool(result and result.stopped_early)
    return TrialRow(
        trial_id=trial_id,
        round=spec.round if spec is not None else 0,
        status=result.status.value if result else PENDING,
        metric=metric,
        value=metrics.get(metric),
        reward=result.reward if result else None,
        latency_ms=metrics.get("latency_ms"),
        flops=metrics.get("flops"),
        params=metrics.get("params"),
        duration_s=result.duration_s if result else 0.0,
        source=source,
        error=result.error if result else "",
        latency_p90_ms=metrics.get("latency_p90_ms"),
        rung=spec.rung if spec is not None else 0,
        promoted_from=spec.promoted_from if spec is not None else None,
        steps=_steps(metrics.get("eval_step")) if stopped else _budget_steps(spec),
        stopped_early=stopped,
        stop_reason=result.stop_reason if result and stopped else "",
    )


def _steps(value: object) -> int:
    """A step count from a record (0 when it is not a finite, non-negative number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _budget_steps(spec: TrialSpec | None) -> int:
    """The training steps of the trial's budget (0 when unknown)."""
    return _steps(spec.budget.get("train_steps")) if spec is not None else 0


def corrupt_row(bad: CorruptRecord, metric: str, spec: TrialSpec | None = None) -> TrialRow:
    """The row of a trial with an unreadable record: ``CORRUPT``, the file, why and the repair."""
    return dataclasses.replace(
        trial_row(bad.trial_id, None, metric, spec),
        status=CORRUPT,
        error=f"{bad.uri} cannot be read ({bad.error}); {bad.repair}",
    )


def _fmt(value: float | None, spec: str, divisor: float = 1.0) -> str:
    return "-" if value is None else format(value / divisor, spec)


# The measured columns: (header, cell text); ``{metric}`` is the objective metric's name.
_MEASURES: list[tuple[str, Callable[[TrialRow], str]]] = [
    ("{metric}", lambda r: _fmt(r.value, ".4f")),
    ("reward", lambda r: _fmt(r.reward, ".4f")),
    ("latency ms", lambda r: _fmt(r.latency_ms, ".2f")),
    ("p90 ms", lambda r: _fmt(r.latency_p90_ms, ".2f")),
    ("M mult-adds", lambda r: _fmt(r.flops, ".1f", 1e6)),
    ("params", lambda r: _fmt(r.params, ",.0f")),
]


def measure_headers(metric: str) -> list[str]:
    """The headers of the measured columns, for objective metric ``metric``."""
    return [header.format(metric=metric) for header, _ in _MEASURES]


def measure_cells(row: TrialRow) -> list[str]:
    """The measured columns' cells of one row (``-`` where a value is missing)."""
    return [cell(row) for _, cell in _MEASURES]


def describe_result(result: TrialResult, metric: str) -> str:
    """One line for a trial result: status, metric, reward, latency and duration, or the error."""
    if not result.completed:
        return f"{result.status.value}: {result.error} ({result.duration_s:.0f} s)"
    parts = [result.status.value]
    if metric in result.metrics:
        parts.append(f"{metric} {result.metrics[metric]:.4f}")
    parts.append(f"reward {result.reward:.4f}")
    if "latency_ms" in result.metrics:
        p90 = result.metrics.get("latency_p90_ms")
        notes = [f"p90 {p90:.1f}"] if p90 is not None else []
        reused = (result.measurement or {}).get("reused_from")
        if isinstance(reused, dict):  # the same computation measured before (measurement.reuse)
            notes.append(f"measured as {reused.get('study')} trial {reused.get('trial_id')}")
        spread = f" ({', '.join(notes)})" if notes else ""
        parts.append(f"latency {result.metrics['latency_ms']:.1f} ms{spread}")
    return " ".join(parts) + f" ({result.duration_s:.0f} s)"
