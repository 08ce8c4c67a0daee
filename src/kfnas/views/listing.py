"""Listing a study's trials from the store, for ``kfnas trials`` (like Vertex's list-trials).

``list_trials(experiment_uri, study)`` reads every trial of one study, in id order, into
``TrialRow``s: id, round, status, the objective metric, reward, latency, FLOPs, parameters,
duration, what it retrains and why it failed. A proposed trial without a ``result.json`` yet is
``PENDING`` (queued or running). ``TrialRow.to_dict`` is the JSON form, one object per trial.
Everything comes from the store, so it works on any store, during a run or after it.

To show another value: add a field to ``TrialRow``, fill it in ``_row``, and add a column to the
table of ``kfnas.cli``'s ``trials`` command.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kfnas.config.spec import SpecError
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.store import open_experiment

#: The status of a proposed trial that has no result yet (queued or running).
PENDING = "PENDING"


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One trial of a study, as listed.

    Attributes:
        trial_id: The trial's id.
        round: The round that proposed it.
        status: ``COMPLETED``, ``FAILED``, ``INFEASIBLE`` or ``PENDING`` (no result yet).
        metric: The objective metric's name.
        value: The objective metric's value, if evaluated.
        reward: The reward, for a completed trial.
        latency_ms: Batch-1 latency, if measured.
        flops: Multiply-adds of one batch-1 inference, if counted.
        params: Number of weights, if counted.
        duration_s: Wall time of the trial (0 while pending).
        source: ``"<study> trial <id>"`` for a retrained copy of another trial, else empty.
        error: Why the trial failed or is infeasible; empty otherwise.
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

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON-ready data."""
        return dataclasses.asdict(self)


def list_trials(experiment_uri: str, study: str) -> list[TrialRow]:
    """Every trial of ``study`` in the experiment's store, in id order.

    Raises:
        SpecError: No experiment at the URI, or no such study (the message lists the studies).
    """
    exp = open_experiment(experiment_uri)
    if study not in exp.spec.studies:
        raise SpecError(
            f"experiment {experiment_uri} has no study {study!r}; its studies: "
            f"{', '.join(exp.spec.studies)} (kfnas trials URI --study NAME)"
        )
    metric = exp.spec.objectives.metric
    return [_row(spec, result, metric) for spec, result in exp.records.history(study)]


def _row(spec: TrialSpec, result: TrialResult | None, metric: str) -> TrialRow:
    metrics = result.metrics if result else {}
    return TrialRow(
        trial_id=spec.trial_id,
        round=spec.round,
        status=result.status.value if result else PENDING,
        metric=metric,
        value=metrics.get(metric),
        reward=result.reward if result else None,
        latency_ms=metrics.get("latency_ms"),
        flops=metrics.get("flops"),
        params=metrics.get("params"),
        duration_s=result.duration_s if result else 0.0,
        source=f"{spec.source_study} trial {spec.source_trial}" if spec.source_study else "",
        error=result.error if result else "",
    )
