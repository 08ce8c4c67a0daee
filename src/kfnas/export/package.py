"""Writing the handoff package of an export: ``model_card.md``, ``handoff.json``, ``latest``.

``write_handoff`` builds the ``Handoff`` (``kfnas.export.handoff``) of an export from its record,
the trial records and the spec, renders the model card (``kfnas.export.model_card``) and writes,
in this order, ``model_card.md``, ``handoff.json`` (create-only) and last the experiment's
``export/latest`` pointer, which only moves forward.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any

from kfnas.export.handoff import (
    HANDOFF_FILE,
    MODEL_CARD_FILE,
    RUN_ID_ENV,
    SCHEMA_VERSION,
    TASK_CONFIG_FILE,
    Handoff,
    HandoffNotFoundError,
    framework_versions,
    read_manifest,
    read_signatures,
)
from kfnas.export.model_card import proxy_pairs, render_model_card, study_summary
from kfnas.export.saved_model import ARCHITECTURE_FILE, RECORD_FILE, SAVED_MODEL_DIR, ExportRecord
from kfnas.records.trial import TrialSpec
from kfnas.search.ranking import kendall_tau
from kfnas.store import ArtifactStore, Experiment, ObjectExists, ObjectNotFound


def write_handoff(
    exp: Experiment,
    version: str,
    *,
    run_id: str = "",
    image: str = "",
    now: datetime.datetime | None = None,
) -> Handoff:
    """Writes the model card and ``handoff.json`` of a finished export, then moves ``latest``.

    Safe to run again: a version that already has its ``handoff.json`` keeps it (only ``latest``
    is brought forward if a run stopped before moving it).

    Args:
        exp: The opened experiment (``kfnas.store.open_experiment``).
        version: The exported version (``export.json`` must exist in its folder).
        run_id: The KFP run id; if empty, ``$KFNAS_RUN_ID`` or empty.
        image: The runtime image reference of the pipeline's steps; empty if unknown.
        now: The creation time to record (default: now, UTC).

    Returns:
        The manifest written (or found).

    Raises:
        HandoffNotFoundError: The version has no finished export.
    """
    folder = exp.layout.export_dir(version)
    store = exp.store
    path = exp.layout.handoff_json(version)
    if store.exists(path):
        handoff = read_manifest(store, path)
    else:
        if not store.exists(f"{folder}/{RECORD_FILE}"):
            raise HandoffNotFoundError(
                f"{store.uri(folder)} holds no finished export ({RECORD_FILE} missing); export "
                f"the model first (kfnas.stages.export_model)"
            )
        record = ExportRecord.from_dict(json.loads(store.read_text(f"{folder}/{RECORD_FILE}")))
        handoff = _build(exp, version, record, run_id or os.environ.get(RUN_ID_ENV, ""), image, now)
        store.write_text(exp.layout.model_card(version), render_model_card(handoff))
        try:
            store.write_text(path, handoff.to_json(), if_absent=True)
        except ObjectExists:  # Another writer finished first: keep its manifest.
            handoff = read_manifest(store, path)
    _advance_latest(store, exp.layout.export_latest(), handoff)
    return handoff


def _build(
    exp: Experiment,
    version: str,
    record: ExportRecord,
    run_id: str,
    image: str,
    now: datetime.datetime | None,
) -> Handoff:
    """The manifest of one export, from its record, the trial records and the spec."""
    spec, records = exp.spec, exp.records
    trial = records.read_spec(record.study, record.trial_id)
    result = records.read_result(record.study, record.trial_id)
    metrics = dict(result.metrics if result else record.metrics)
    metric = spec.objectives.metric
    folder = exp.layout.export_dir(version)
    histories = {study: records.history(study) for study in spec.studies}
    pairs = proxy_pairs(histories, metric)
    created = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    return Handoff(
        model_version=version,
        created=created.isoformat(timespec="seconds"),
        task_kind=record.task_kind,
        num_classes=spec.task.num_classes,
        input_size=tuple(record.input_size),
        frameworks=framework_versions(),
        saved_model=SAVED_MODEL_DIR,
        signatures=read_signatures(exp.store, f"{folder}/{SAVED_MODEL_DIR}", record.signatures),
        metric=metric,
        metrics=metrics,
        reward=result.reward if result else None,
        latency_ms=metrics.get("latency_ms"),
        flops=metrics.get("flops"),
        params=metrics.get("params"),
        space=trial.space,
        arch_json=trial.arch_json,
        task_overrides=tuple(trial.task_overrides),
        experiment=exp.layout.experiment,
        experiment_uri=exp.uri,
        study=record.study,
        trial_id=record.trial_id,
        lineage=_lineage(exp, trial, metric),
        run_id=run_id,
        image=image,
        data=dataclasses.asdict(spec.with_overrides(list(trial.data_overrides)).data),
        files=_files(exp.store, folder),
        search_history=[
            study_summary(s, spec.study(s).space, h, metric) for s, h in histories.items()
        ],
        kendall_tau=kendall_tau(*zip(*pairs, strict=True)) if len(pairs) >= 2 else None,
    )


def _files(store: ArtifactStore, folder: str) -> dict[str, str]:
    """Role -> path relative to the export folder of each file of the handoff package."""
    files = {
        "saved_model": SAVED_MODEL_DIR,
        "architecture": ARCHITECTURE_FILE,
        "export_record": RECORD_FILE,
        "model_card": MODEL_CARD_FILE,
    }
    if store.exists(f"{folder}/{TASK_CONFIG_FILE}"):  # tf-models' experiment config of the task
        files["task_config"] = TASK_CONFIG_FILE
    return files


def _lineage(exp: Experiment, trial: TrialSpec, metric: str) -> list[dict[str, Any]]:
    steps, source = [], trial
    while True:
        result = exp.records.read_result(source.study, source.trial_id)
        value = result.metrics.get(metric) if result else None
        steps.append({"study": source.study, "trial_id": source.trial_id, "metric": value})
        if source.source_trial is None:
            return steps
        source = exp.records.read_spec(source.source_study, source.source_trial)


def _advance_latest(store: ArtifactStore, pointer: str, handoff: Handoff) -> None:
    """Points ``latest`` at ``handoff``'s version unless it names a newer one (atomic write)."""
    try:
        current = json.loads(store.read_text(pointer))
    except (ObjectNotFound, json.JSONDecodeError):
        current = None  # None yet, or damaged: this finished version replaces it.
    if (
        isinstance(current, dict)
        and current.get("version") != handoff.model_version
        and _time(str(current.get("created", ""))) > _time(handoff.created)
    ):
        return  # A newer version is already the latest: never move back.
    text = json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "version": handoff.model_version,
            "created": handoff.created,
            "handoff": f"{handoff.model_version}/{HANDOFF_FILE}",
        },
        indent=2,
    )
    store.write_text(pointer, text)


def _time(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
