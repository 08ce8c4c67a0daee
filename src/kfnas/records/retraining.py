"""The record of one retraining run: ``<experiment>/retraining/<version>.json``.

``kfnas.stages.retraining`` writes a ``RetrainingRecord`` when it plans the retrained trial
(``planned``) and rewrites it once when the run ends (``published``, ``rejected`` or ``failed``,
with both scores and the tolerance); a rerun resumes from it and a person reads there why no new
version appeared. To add a field: give it a default and bump ``SCHEMA_VERSION`` if a reader needs
it (``kfnas.records.base``).
"""

from __future__ import annotations

import dataclasses
import enum

from kfnas.records.base import Record

# 1: the first layout.
SCHEMA_VERSION = 1


class RetrainingStatus(enum.StrEnum):
    """Where a retraining run stands; stored as its value (``planned``, ...)."""

    PLANNED = "planned"
    PUBLISHED = "published"
    REJECTED = "rejected"
    FAILED = "failed"


PLANNED, PUBLISHED, REJECTED, FAILED = RetrainingStatus


@dataclasses.dataclass(frozen=True)
class RetrainingRecord(Record):
    """One retraining run and how it ended.

    Attributes:
        version: The version it exports to if it is published.
        trial_id: Its trial in ``study``.
        previous_version: The version it retrains (and, when published, is compared with).
        metric: The metric the two are compared on (the previous handoff's).
        previous_score: The previous version's ``metric``; ``None`` if it has none.
        data: The data the trial trains and is scored on: ``train``, ``validation``,
            ``annotations``.
        run_id: The KFP run that planned it; empty outside KFP.
        status: ``planned``, then ``published``, ``rejected`` or ``failed``.
        score: The retrained trial's ``metric``, once judged.
        tolerance: How much worse than ``previous_score`` it may be and still publish.
        export_uri: The exported version's folder, when published.
        reason: One sentence saying why it ended as it did.
        study: The study of the trial (``kfnas.config.studies.RETRAINING``).
    """

    KIND = "retraining record"
    SCHEMA_VERSION = SCHEMA_VERSION

    version: str
    trial_id: int
    previous_version: str
    metric: str
    previous_score: float | None
    data: dict[str, str]
    run_id: str = ""
    status: RetrainingStatus = PLANNED
    score: float | None = None
    tolerance: float | None = None
    export_uri: str = ""
    reason: str = ""
    study: str = dataclasses.field(kw_only=True)
