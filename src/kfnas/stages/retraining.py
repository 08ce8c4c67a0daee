"""Retraining an exported model on new data, and publishing it only if it is not worse.

A retraining run (``pipelines/retraining.py``; ``kfnas schedule`` makes it recurring) starts from
the handoff of an exported model (``kfnas.export.handoff``) and new data:

1. ``plan_retraining`` (stage ``init_retraining``) reads the handoff, checks the new data with the
   experiment's task and writes one trial of the experiment's ``retraining`` study: the handoff's
   space, architecture and ``task_overrides`` (its scaling and augmentation policy), the full
   training budget of the ``final`` study (or the one given) and the new data.
2. ``run_trial`` trains it like any other trial.
3. ``judge_retraining`` (stage ``publish_if_not_worse``) compares its score with the previous
   version's, on the previous handoff's metric: the stage exports it as the new version (which
   moves ``export/latest``) only if ``score >= previous score - tolerance``; otherwise the
   previous version stays current. A trial that did not complete never publishes.

Each run is one trial of the experiment's ``retraining`` study, trained on its own
``data_overrides``; ``<experiment>/retraining/<version>.json`` holds its ``RetrainingRecord``
(``planned``, then ``published``, ``rejected`` or ``failed``): a rerun resumes from it, and a person
reads there why no new version appeared. The new score is measured on the validation data the
retraining uses (the new data's, when given), the previous one is the handoff's: give the same
validation data to compare like with like.

To extend the decision (more metrics, a relative tolerance): change ``judge``, a pure function,
and add fields with defaults to ``RetrainingRecord``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import TYPE_CHECKING, Any

from kfnas.config.spec import DataSpec, SpecError
from kfnas.config.studies import FINAL, RETRAINING
from kfnas.export.saved_model import RECORD_FILE
from kfnas.records import RecordError
from kfnas.records.retraining import (
    FAILED,
    PLANNED,
    PUBLISHED,
    REJECTED,
    RetrainingRecord,
)
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.stages._common import export_trial
from kfnas.store import Experiment, ObjectNotFound, open_experiment

if TYPE_CHECKING:
    from kfnas.export.handoff import Handoff


class RetrainingError(SpecError):
    """A retraining that cannot start: wrong data, a version taken, a bad budget or tolerance."""


class RetrainingFailedError(RuntimeError):
    """The retrained trial did not complete; the previous version stays current."""


def read_record(exp: Experiment, version: str) -> RetrainingRecord | None:
    """The record of the retraining to ``version``; ``None`` if there is none.

    Raises:
        RetrainingError: The record is damaged or was written by a newer kfnas.
    """
    try:
        return _load(exp, exp.layout.retraining_record(version))
    except ObjectNotFound:
        return None


def write_record(exp: Experiment, record: RetrainingRecord) -> None:
    """Writes (or replaces) the record of ``record.version``, atomically.

    A record (``kfnas.records.retraining``) is written when the trial is planned (``planned``) and
    rewritten once when the run ends (``published``, ``rejected`` or ``failed``, with both scores
    and the tolerance). A rerun of the same run (same version, or the same KFP run id when the
    version is chosen by date) resumes from it.
    """
    exp.store.write_text(exp.layout.retraining_record(record.version), record.to_json())


def _load(exp: Experiment, path: str) -> RetrainingRecord:
    try:
        return RetrainingRecord.from_json(exp.store.read_text(path), exp.store.uri(path))
    except RecordError as e:
        raise RetrainingError(str(e)) from e


def _record_of_run(exp: Experiment, run_id: str) -> RetrainingRecord | None:
    """The record a KFP run planned before (its step retried or the run resumed), if any."""
    folder = exp.layout.retrainings_dir()
    for name in exp.store.list_children(folder) if run_id else []:
        record = _load(exp, f"{folder}/{name}")
        if record.run_id == run_id:
            return record
    return None


def new_data_overrides(train: str, validation: str = "", annotations: str = "") -> list[str]:
    """The trial's ``data_overrides`` for new data; empty validation data keeps the experiment's.

    New validation data replace the annotations too (the experiment's describe its own validation
    images), with ``annotations`` or none.

    Raises:
        RetrainingError: No training data given.
    """
    if not train.strip():
        raise RetrainingError(
            "a retraining needs new training data: give train_data, a TFRecord file pattern such "
            "as gs://bucket/new/train-*.tfrecord"
        )
    values = {"train": train.strip()}
    if validation.strip():
        values |= {"validation": validation.strip(), "annotations": annotations.strip()}
    elif annotations.strip():
        raise RetrainingError(
            "annotations were given without validation_data: they describe validation images, "
            "so give the validation data they belong to"
        )
    return [f"data.{key}={json.dumps(value)}" for key, value in values.items()]


def _budget(exp: Experiment, train_steps: int, batch_size: int) -> dict[str, Any]:
    """The final study's budget (the full training), with the steps and batch size given."""
    budget = exp.spec.study(FINAL).budget or exp.spec.budget
    changes = {k: v for k, v in (("train_steps", train_steps), ("batch_size", batch_size)) if v}
    budget = dataclasses.replace(budget, **changes)
    if problems := budget.problems("retraining budget"):
        raise RetrainingError("; ".join(problems))
    return dataclasses.asdict(budget)


def _source_dna(exp: Experiment, previous: Handoff) -> str:
    """The DNA of the exported trial, when its record is still in the store (else none)."""
    try:
        return exp.records.read_spec(previous.study, previous.trial_id).dna_json
    except ObjectNotFound:
        return ""


def plan_retraining(
    exp: Experiment,
    previous: Handoff,
    data_overrides: list[str],
    *,
    version: str = "",
    train_steps: int = 0,
    batch_size: int = 0,
    run_id: str = "",
    now: datetime.datetime | None = None,
) -> RetrainingRecord:
    """Writes the retraining trial of ``previous`` on new data, and its record (or resumes them).

    Design choices: one ``retraining`` study per experiment, one trial per retraining run, in the
    experiment the handoff came from: ids keep increasing over the runs, ``kfnas trials`` lists
    them, and the new model's lineage (``source_study``/``source_trial``) leads back through the
    search. ``experiment.json`` is written once and never changes: the new data are the trial's
    own ``data_overrides`` (``kfnas.records.trial.TrialSpec``), so the search's trials keep their
    data and each retraining trial's record says exactly what it was trained and scored on.

    Args:
        exp: The experiment ``previous`` was exported from.
        previous: The handoff of the version to retrain.
        data_overrides: From ``new_data_overrides``.
        version: The version to export to; empty: the UTC date and time (``20260131-030000``),
            so each scheduled run makes a new version.
        train_steps: Training steps; 0: the final study's.
        batch_size: Batch size; 0: the final study's.
        run_id: The KFP run id: a rerun of the same run resumes its retraining.
        now: The time an empty ``version`` is named after (default: now).

    Returns:
        The record, ``planned`` (or as a rerun finds it).

    Raises:
        RetrainingError: The new data do not fit the model's task (the data check's message), the
            version is taken by another export or retraining, or the budget is invalid.
    """
    from kfnas.training.runner import trial_experiment_spec
    from kfnas.validation import check_data

    if RETRAINING in exp.spec.studies:
        raise RetrainingError(f"experiment {exp.spec.name!r} has a study named {RETRAINING!r}")
    resumed = read_record(exp, version) if version else _record_of_run(exp, run_id)
    if not version:
        stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%d-%H%M%S")
        version = resumed.version if resumed else stamp
    if version == previous.model_version:
        raise RetrainingError(f"the retrained model needs a version other than {version!r}")
    trial = TrialSpec(
        experiment=exp.spec.name,
        study=RETRAINING,
        trial_id=resumed.trial_id if resumed else exp.records.next_trial_id(RETRAINING),
        round=1,
        space=previous.space,
        dna_json=_source_dna(exp, previous),
        arch_json=previous.arch_json,
        budget=_budget(exp, train_steps, batch_size),
        source_study=previous.study,
        source_trial=previous.trial_id,
        task_overrides=tuple(previous.task_overrides),
        data_overrides=tuple(data_overrides),
    )
    trial = dataclasses.replace(trial, seed=(exp.spec.study(FINAL).seed or 0) + trial.trial_id)
    data = trial_experiment_spec(exp.spec, trial).data
    if resumed is not None:
        if (resumed.previous_version, resumed.data) != (previous.model_version, _data(data)):
            raise RetrainingError(
                f"version {version!r} was already retrained from {resumed.previous_version!r} on "
                f"{resumed.data}: give this retraining another new_version"
            )
        return resumed
    if exp.store.exists(f"{exp.layout.export_dir(version)}/{RECORD_FILE}"):
        raise RetrainingError(
            f"{exp.store.uri(exp.layout.export_dir(version))} already holds an exported model: "
            f"give the retrained model another new_version"
        )
    try:
        check_data(trial_experiment_spec(exp.spec, trial))
    except SpecError as e:
        raise RetrainingError(
            f"the new data cannot retrain {previous.model_version} ({previous.task_kind}, "
            f"{previous.num_classes} classes), nothing was trained: {e}\nA retraining keeps the "
            f"model's task and classes; for other classes run a new search."
        ) from e
    exp.records.write_spec(trial)
    record = RetrainingRecord(
        version=version,
        trial_id=trial.trial_id,
        previous_version=previous.model_version,
        metric=previous.metric,
        previous_score=previous.metrics.get(previous.metric),
        data=_data(data),
        run_id=run_id,
        study=RETRAINING,
    )
    write_record(exp, record)
    return record


def _data(data: DataSpec) -> dict[str, str]:
    return dataclasses.asdict(data)


def judge(score: float | None, previous_score: float | None, tolerance: float) -> tuple[bool, str]:
    """Whether a retrained score publishes: ``score >= previous_score - tolerance``.

    Returns:
        ``(publish, reason)``; a missing score never publishes, a missing previous score always.
    """
    if score is None or not math.isfinite(score):
        return False, "the retrained trial has no score to compare"
    if previous_score is None:
        return True, "the previous version has no score to compare with"
    bar = previous_score - tolerance
    if score >= bar:
        return True, f"{score:.6g} >= {previous_score:.6g} - {tolerance:g} (previous - tolerance)"
    return False, (
        f"{score:.6g} < {previous_score:.6g} - {tolerance:g}: worse than the previous version by "
        f"more than the tolerance"
    )


def judge_retraining(
    record: RetrainingRecord, result: TrialResult | None, previous: Handoff, tolerance: float
) -> RetrainingRecord:
    """The record of a trained retraining, judged against ``previous``: published or not.

    ``published`` here means "to export": the caller exports it and sets ``export_uri``.

    Raises:
        RetrainingError: ``tolerance`` is not a finite number.
    """
    if not isinstance(tolerance, int | float) or not math.isfinite(tolerance):
        raise RetrainingError(f"tolerance must be a finite number, e.g. 0.01; got {tolerance!r}")
    previous_score = previous.metrics.get(previous.metric)
    base = dataclasses.replace(
        record,
        previous_version=previous.model_version,
        metric=previous.metric,
        previous_score=previous_score,
        tolerance=float(tolerance),
    )
    if result is None or not result.completed:
        status = result.status.value if result else "not finished"
        why = f": {result.error}" if result and result.error else ""
        reason = f"trial {record.trial_id} of {record.study} is {status}{why}"
        return dataclasses.replace(base, status=FAILED, reason=reason)
    score = result.metrics.get(previous.metric)
    publish, reason = judge(score, previous_score, tolerance)
    return dataclasses.replace(
        base, status=PUBLISHED if publish else REJECTED, score=score, reason=reason
    )


def init_retraining(
    handoff_uri: str,
    train_data: str,
    validation_data: str = "",
    annotations: str = "",
    full_train_steps: int = 0,
    full_batch_size: int = 0,
    new_version: str = "",
    run_id: str = "",
) -> dict[str, Any]:
    """Plans the retraining of an exported model on new data: one trial of study ``retraining``.

    The trial trains the handoff's architecture with its scaling and augmentation policy
    (``task_overrides``) and the full-training budget on the new data, in the experiment the model
    came from; the new data are checked with the experiment's task first. Running this again for
    the same ``new_version`` (or, with none, the same ``run_id``) returns the same trial. See
    ``kfnas.stages.retraining``.

    Args:
        handoff_uri: The model to retrain: an export version folder, its ``handoff.json``, or
            ``<experiment>/export/latest``.
        train_data: File pattern of the new training TFRecords.
        validation_data: File pattern of the new validation TFRecords; empty keeps the
            experiment's (and its annotations).
        annotations: COCO annotation JSON of the new validation data (detection).
        full_train_steps: Training steps; 0: the final study's.
        full_batch_size: Batch size; 0: the final study's.
        new_version: The version a published model gets; empty: the UTC date and time.
        run_id: The KFP run id, so a rerun of the run resumes.

    Returns:
        ``{"experiment_uri", "study", "trial_id", "version", "previous_version"}``.

    Raises:
        HandoffNotFoundError: Nothing exported at ``handoff_uri``.
        HandoffError: The handoff has a newer or invalid schema version.
        RetrainingError: The new data do not fit the model's task and classes, the version is
            taken, or the budget is invalid.
    """
    from kfnas.export.handoff import read_handoff

    previous = read_handoff(handoff_uri)
    exp = open_experiment(previous.experiment_uri)
    record = plan_retraining(
        exp,
        previous,
        new_data_overrides(train_data, validation_data, annotations),
        version=new_version,
        train_steps=full_train_steps,
        batch_size=full_batch_size,
        run_id=run_id,
    )
    return {
        "experiment_uri": exp.uri,
        "study": record.study,
        "trial_id": record.trial_id,
        "version": record.version,
        "previous_version": record.previous_version,
    }


def publish_if_not_worse(
    experiment_uri: str,
    study: str,
    trial_id: int,
    previous_handoff_uri: str,
    new_version: str,
    tolerance: float,
    run_id: str = "",
    image: str = "",
    serving: str = "",
) -> dict[str, Any]:
    """Exports a retrained trial as ``new_version`` only if it is not worse than the previous one.

    It publishes (``export_model``: SavedModel, handoff, ``latest`` moved) when its score on the
    previous handoff's metric is at least the previous score minus ``tolerance``; otherwise the
    previous version stays current. Either way ``retraining/<new_version>.json`` records the
    status, both scores and the tolerance. A run already judged returns its record.

    Args:
        experiment_uri: From ``init_retraining``.
        study: From ``init_retraining`` (``retraining``).
        trial_id: From ``init_retraining``.
        previous_handoff_uri: The version to compare with (``init_retraining``'s ``handoff_uri``;
            ``export/latest`` compares with the current version).
        new_version: From ``init_retraining``.
        tolerance: How much lower the new score may be (0: at least as good; negative: better
            by at least that much).
        run_id: The KFP run id recorded in the new handoff.
        image: The runtime image recorded in the new handoff.
        serving: How KServe serves the new version (``kfnas.export.kserve.ServingSettings`` as
            JSON, from the cluster profile's ``serving`` section); empty: kfnas's defaults.

    Returns:
        The ``RetrainingRecord`` as a dict (``status``: ``published`` or ``rejected``).

    Raises:
        RetrainingFailedError: The trial did not complete (recorded as ``failed``); nothing
            published.
        RetrainingError: ``tolerance`` is not finite.
        ValueError: ``new_version`` has no retraining of that trial.
    """
    from kfnas.export.handoff import read_handoff

    exp = open_experiment(experiment_uri)
    record = read_record(exp, new_version)
    if record is None or (record.study, record.trial_id) != (study, trial_id):
        raise ValueError(f"no retraining of {study} trial {trial_id} to version {new_version!r}")
    if record.status == PLANNED:
        result = exp.records.read_result(study, trial_id)
        record = judge_retraining(record, result, read_handoff(previous_handoff_uri), tolerance)
        if record.status == PUBLISHED:
            uri = export_trial(exp, study, trial_id, new_version, run_id, image, serving=serving)
            record = dataclasses.replace(record, export_uri=uri)
        write_record(exp, record)
    if record.status == FAILED:
        raise RetrainingFailedError(
            f"the retraining to {new_version} failed, {record.previous_version} stays current: "
            f"{record.reason}"
        )
    return record.to_dict()
