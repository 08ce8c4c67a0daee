"""Writing the handoff package of an export: ``model_card.md``, ``handoff.json``, ``latest``.

``write_handoff`` builds the ``Handoff`` (``kfnas.export.handoff``) of an export from its record,
the trial records and the spec, and the KServe ``InferenceService`` serving its SavedModel
(``kfnas.export.kserve``, with the serving settings given: a cluster profile's ``serving`` section,
or kfnas's defaults), renders the model card (``kfnas.export.model_card``) and writes, in this
order, ``serving/inferenceservice.yaml``, ``model_card.md``, ``handoff.json`` (create-only) and
last the experiment's ``export/latest`` pointer, which only moves forward.

Concurrent exporters never mix their files:

- ``claim_export(store, layout, version, study, trial_id)`` claims ``export/<version>`` with a
  lease (``export/<version>/export_claim.json``, created before anything else is written under
  the version; ``kfnas.store.lease``) and yields a ``TrialClaim`` whose ``outcome`` is
  ``ACQUIRED`` (export, then ``write_handoff``, calling ``claim.check()`` before each write) or
  ``DONE`` (another exporter finished this version: only ``write_handoff``, which keeps its
  manifest). A second exporter of the same version waits for the first's ``handoff.json`` and
  takes over only if the first's lease expires (it died); an exporter of another trial to a
  version that holds or is being given one is refused with ``ExportConflictError``.
- ``export/latest`` is read with its generation and written with it as precondition
  (compare-and-swap, retried on a conflict); it moves only to a version whose ``(created,
  version)`` is greater than the one it names, and counts its moves in ``sequence``.

To extend: write any new file of an export after ``export.json`` and before ``handoff.json``,
inside the claim.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Iterator
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
from kfnas.export.kserve import (
    INFERENCE_SERVICE_FILE,
    ServingSettings,
    inference_service,
    model_folder,
)
from kfnas.export.model_card import proxy_pairs, render_model_card, study_summary
from kfnas.export.saved_model import ARCHITECTURE_FILE, RECORD_FILE, ExportRecord
from kfnas.records.trial import TrialSpec
from kfnas.search.ranking import kendall_tau
from kfnas.store import (
    ArtifactStore,
    Experiment,
    ExperimentLayout,
    ObjectExists,
    ObjectNotFound,
    StoreError,
)
from kfnas.store.base import GenerationMismatch
from kfnas.store.lease import Clock, Lease, TrialClaim, claim_path

#: The claim (a lease) of an export version, the first object written under it.
CLAIM_FILE = "export_claim.json"
#: Compare-and-swap attempts on ``export/latest`` before giving up (each lost to another mover).
_LATEST_TRIES = 20


class ExportConflictError(ValueError):
    """An export version holds, or is being given, the export of another trial."""


@contextlib.contextmanager
def claim_export(
    store: ArtifactStore,
    layout: ExperimentLayout,
    version: str,
    study: str,
    trial_id: int,
    owner: str | None = None,
    *,
    ttl_s: float = 600.0,
    renew_every_s: float = 60.0,
    wait: bool = True,
    poll_s: float = 10.0,
    clock: Clock = time.time,
) -> Iterator[TrialClaim]:
    """Claims ``export/<version>`` for the export of one trial; see the module docstring.

    Args:
        store: The experiment's store.
        layout: The experiment's layout.
        version: The export version.
        study: The exported trial's study.
        trial_id: The exported trial's id.
        owner: Who exports, for people; default ``host:pid``.
        ttl_s: Seconds the claim holds without a renewal (renewed by a thread while held).
        renew_every_s: Seconds between renewals.
        wait: Wait for a live exporter of the same trial; ``False``: yield ``WAIT`` at once.
        poll_s: Seconds between looks while waiting.
        clock: Epoch seconds now (tests).

    Yields:
        The claim (``outcome``: ``ACQUIRED``, ``DONE`` or, without ``wait``, ``WAIT``).

    Raises:
        ExportConflictError: The version holds, or is being given, another trial's export.
    """
    folder = layout.export_dir(version)
    lease_path = f"{folder}/{CLAIM_FILE}"
    _check_same_trial(store, folder, lease_path, version, study, trial_id)
    with claim_path(
        store,
        lease_path,
        layout.handoff_json(version),
        owner,
        note={"study": study, "trial_id": trial_id, "version": version},
        ttl_s=ttl_s,
        renew_every_s=renew_every_s,
        wait=wait,
        poll_s=poll_s,
        clock=clock,
    ) as claim:
        _check_same_trial(store, folder, lease_path, version, study, trial_id, claimed=True)
        yield claim


def _check_same_trial(
    store: ArtifactStore,
    folder: str,
    lease_path: str,
    version: str,
    study: str,
    trial_id: int,
    *,
    claimed: bool = False,
) -> None:
    """Raises ``ExportConflictError`` if the version holds or is claimed for another trial."""
    found: list[tuple[str, Any, Any]] = []
    for name in (HANDOFF_FILE, RECORD_FILE):
        with contextlib.suppress(ObjectNotFound, ValueError):
            fields = json.loads(store.read_text(f"{folder}/{name}"))
            found.append(
                (store.uri(f"{folder}/{name}"), fields.get("study"), fields.get("trial_id"))
            )
    holder = None if claimed else Lease(store, lease_path).holder()
    if holder is not None and holder.live(time.time()):
        note = holder.note
        found.append(
            (
                f"{store.uri(lease_path)} (held by {holder.owner})",
                note.get("study"),
                note.get("trial_id"),
            )
        )
    for where, other_study, other_trial in found:
        if (other_study, other_trial) != (study, trial_id):
            raise ExportConflictError(
                f"export version {version!r} belongs to {other_study} trial {other_trial} "
                f"({where}); export {study} trial {trial_id} to another version"
            )


def write_handoff(
    exp: Experiment,
    version: str,
    *,
    run_id: str = "",
    image: str = "",
    now: datetime.datetime | None = None,
    serving: ServingSettings | None = None,
) -> Handoff:
    """Writes the KServe manifest, model card and ``handoff.json`` of an export; moves ``latest``.

    Safe to run again: a version that already has its ``handoff.json`` keeps it (only ``latest``
    is brought forward if a run stopped before moving it).

    Args:
        exp: The opened experiment (``kfnas.store.open_experiment``).
        version: The exported version (``export.json`` must exist in its folder).
        run_id: The KFP run id; if empty, ``$KFNAS_RUN_ID`` or empty.
        image: The runtime image reference of the pipeline's steps; empty if unknown.
        now: The creation time to record (default: now, UTC).
        serving: How KServe serves the model (the cluster profile's ``serving`` section, as the
            export step receives it); ``None``: kfnas's defaults, which the manifest states.

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
        service = inference_service(
            handoff,
            store.uri(f"{folder}/{model_folder(record.saved_model_dir)}"),
            serving,
            handoff_uri=store.uri(path),
        )
        store.write_text(exp.layout.inference_service(version), service.to_yaml())
        store.write_text(exp.layout.model_card(version), render_model_card(handoff, service))
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
        saved_model=record.saved_model_dir,
        model_format=record.model_format,
        signatures=record.signature_specs
        or read_signatures(exp.store, f"{folder}/{record.saved_model_dir}", record.signatures),
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
        files=_files(exp.store, folder, record),
        search_history=[
            study_summary(s, spec.study(s).space, h, metric) for s, h in histories.items()
        ],
        kendall_tau=kendall_tau(*zip(*pairs, strict=True)) if len(pairs) >= 2 else None,
    )


def _files(store: ArtifactStore, folder: str, record: ExportRecord) -> dict[str, str]:
    """Role -> path relative to the export folder of each file of the handoff package."""
    files = {
        "saved_model": record.saved_model_dir,
        "architecture": ARCHITECTURE_FILE,
        "export_record": RECORD_FILE,
        "model_card": MODEL_CARD_FILE,
        "inference_service": INFERENCE_SERVICE_FILE,  # written with the card, before handoff.json
    }
    if store.exists(f"{folder}/{TASK_CONFIG_FILE}"):  # tf-models' experiment config of the task
        files["task_config"] = TASK_CONFIG_FILE
    return {**files, **record.files}


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
    """Points ``latest`` at ``handoff``'s version unless it names a newer one."""
    advance_latest(store, pointer, handoff.model_version, handoff.created)


def advance_latest(store: ArtifactStore, pointer: str, version: str, created: str) -> bool:
    """Points ``latest`` at ``version`` unless it names a newer one (compare-and-swap).

    Args:
        store: The experiment's store.
        pointer: The pointer's path (``ExperimentLayout.export_latest``).
        version: The finished version (its ``handoff.json`` is written).
        created: Its handoff's creation time (ISO 8601): later versions are newer.

    Returns:
        Whether ``latest`` now names ``version`` because of this call.

    Raises:
        StoreError: Other exporters moved ``latest`` on every one of many attempts.
    """
    ours = (_time(created), version)
    for _ in range(_LATEST_TRIES):
        try:
            data, generation = store.read_with_generation(pointer)
        except ObjectNotFound:
            data, generation = b"", 0  # None yet.
        try:
            current = json.loads(data) if data else None
        except ValueError:
            current = None  # Damaged: this finished version replaces it.
        if isinstance(current, dict):
            theirs = (_time(str(current.get("created", ""))), str(current.get("version", "")))
            if theirs >= ours:
                return False  # Already here, or a newer version is the latest: never move back.
            sequence = current.get("sequence")
            sequence = sequence + 1 if isinstance(sequence, int) else 1
        else:
            sequence = 1
        text = json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "version": version,
                "created": created,
                "handoff": f"{version}/{HANDOFF_FILE}",
                "sequence": sequence,
            },
            indent=2,
        )
        try:
            store.write_if_generation(pointer, text.encode("utf-8"), generation)
            return True
        except GenerationMismatch:
            continue  # Another exporter moved it meanwhile: decide again on what it wrote.
    raise StoreError(
        f"{store.uri(pointer)} was moved by other exporters on each of {_LATEST_TRIES} attempts; "
        f"run the export step again"
    )


def _time(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
