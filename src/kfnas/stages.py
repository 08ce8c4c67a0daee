"""Pipeline stages: plain functions over the store, one per pipeline step.

Stages take and return ids and URIs, never large data: the store is the single source of truth.
Each stage reads what it needs at its start and writes once at its end; no stage calls another, and
every stage is safe to run again (a resubmitted pipeline resumes instead of redoing work). KFP
components are thin wrappers over these functions; ``kfnas`` commands call them directly.

An experiment URI is ``<store_root>/<experiment name>``; ``ExperimentLayout`` knows every path in
it. The search pipeline calls, in order: ``init_experiment``; per round ``propose_trials`` and
``run_trial`` for each trial; ``select_top``; ``propose_retraining`` of the best proxy trials into
the ``validation`` study and ``run_trial`` for each; ``report``; ``select_top`` of the validation
study, ``propose_retraining`` of the winner into ``final``, ``run_trial`` and ``export_model``. The
retraining pipeline calls ``init_retraining``, ``run_trial`` and ``publish_if_not_worse`` (their
logic lives in ``kfnas.retraining``).

To add a stage: write one function here (about 40 lines at most, its contract in the docstring) that
opens the experiment with ``open_experiment``, then wrap it in ``components/<stage>.py``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyglove as pg

from kfnas._validation import check_data
from kfnas.search.controller import history_from_records, propose
from kfnas.settings import FINAL, PROXY, VALIDATION, ExperimentSettings, experiment_spec
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, is_refinement, materialize
from kfnas.spec import ExperimentSpec, SpecError
from kfnas.store import ArtifactStore, ExperimentLayout, ObjectNotFound, TrialRecords, open_store
from kfnas.types import TrialResult, TrialSpec, TrialStatus


class StudyStoppedError(RuntimeError):
    """A study that must not go on (for example too many failed trials in a row)."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An opened experiment: its store, layout, resolved spec and trial records."""

    uri: str
    store: ArtifactStore
    layout: ExperimentLayout
    spec: ExperimentSpec

    @property
    def records(self) -> TrialRecords:
        """The trial records of this experiment."""
        return TrialRecords(self.store, self.layout)


def _split(experiment_uri: str) -> tuple[str, str]:
    root, _, name = experiment_uri.rstrip("/").rpartition("/")
    if not name:
        raise SpecError(f"experiment URI {experiment_uri!r} must look like <store_root>/<name>")
    return root or ".", name


def open_experiment(experiment_uri: str) -> Experiment:
    """Opens an experiment written by ``init_experiment``.

    Raises:
        SpecError: No experiment at that URI (the message says to run init_experiment first).
    """
    root, name = _split(experiment_uri)
    store = open_store(root)
    layout = ExperimentLayout(name)
    try:
        text = store.read_text(layout.experiment_json())
    except ObjectNotFound as e:
        raise SpecError(
            f"no experiment at {experiment_uri!r} ({e}); create it first with init_experiment "
            f"(kfnas init SPEC)"
        ) from e
    return Experiment(experiment_uri, store, layout, ExperimentSpec.from_json(text))


def experiment_uri(spec: ExperimentSpec) -> str:
    """The URI of the experiment ``spec`` describes: ``<store_root>/<name>``."""
    return f"{open_store(spec.store_root).root.rstrip('/')}/{spec.name}"


def init_experiment(spec_yaml: str, overrides: Sequence[str] = (), **settings: Any) -> str:
    """Validates a spec and writes it, resolved, as the experiment's ``experiment.json``.

    Everything that can be checked before GPU time is spent is checked here: the spec, and the data
    (patterns match files, records parse in the task's format, labels fit). The spec gets the
    retraining studies it lacks (``kfnas.settings.complete_studies``). Running it again with the
    same spec is a no-op, so a resubmitted pipeline resumes the experiment.

    Args:
        spec_yaml: The experiment spec as YAML text, or ``"demo"`` (or empty) for the built-in demo.
        overrides: Dotted ``key=value`` overrides applied to it, last.
        **settings: Named settings (the fields of ``kfnas.settings.ExperimentSettings``, e.g.
            ``train_data=...``, ``proxy_train_steps=...``), applied before ``overrides``; an empty
            string or 0 keeps the spec's value.

    Returns:
        The experiment URI, ``<store_root>/<name>``.

    Raises:
        SpecError: The spec or a setting is invalid, or the store already holds a different
            experiment of that name (choose another name, or resume with the same spec).
    """
    spec = experiment_spec(spec_yaml, overrides, ExperimentSettings.from_kwargs(settings))
    check_data(spec)
    store = open_store(spec.store_root)
    layout = ExperimentLayout(spec.name)
    uri = experiment_uri(spec)
    path = layout.experiment_json()
    if store.exists(path):
        if ExperimentSpec.from_json(store.read_text(path)) != spec:
            raise SpecError(
                f"the store already holds an experiment {spec.name!r} with a different spec at "
                f"{store.uri(path)}: give this one another name, or rerun with the same spec "
                f"to resume"
            )
        return uri
    store.write_text(path, spec.to_json(), if_absent=True)
    return uri


def propose_trials(experiment_uri: str, study: str, round_index: int) -> list[int]:
    """Proposes the trials of one round of a study and writes their ``trial.json``.

    The controller is rebuilt from the stored history on every call; proposing again for a round
    that already has trials returns those trials' ids.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study's name in the spec.
        round_index: The round, from 1.

    Returns:
        The trial ids of the round, in proposal order.

    Raises:
        StudyStoppedError: The last ``max_consecutive_failures`` trials all failed.
    """
    exp = open_experiment(experiment_uri)
    study_spec = exp.spec.study(study)
    records = exp.records
    history = records.history(study)
    _check_failures(study, history, study_spec.budget.max_consecutive_failures)
    existing = [spec.trial_id for spec, _ in history if spec.round == round_index]
    if existing:
        return existing
    dnas = propose(
        study_spec,
        history_from_records(history),
        study_spec.budget.trials_per_round,
        round_index=round_index,
    )
    space = get_space(study_spec.space)
    first = records.next_trial_id(study)
    budget = dataclasses.asdict(study_spec.budget)
    base = _refined_trial(exp, study) if is_refinement(space) else None
    for offset, dna in enumerate(dnas):
        trial = TrialSpec(
            experiment=exp.spec.name,
            study=study,
            trial_id=first + offset,
            round=round_index,
            space=study_spec.space,
            dna_json=pg.to_json_str(dna),
            arch_json=architecture_json(space, dna),
            budget=budget,
            seed=(study_spec.seed or 0) * 100003 + first + offset,
        )
        if base is not None:
            trial = _refining(trial, base, space, materialize(space, dna), exp.spec)
        records.write_spec(trial)
    return [first + offset for offset in range(len(dnas))]


def propose_refinement(experiment_uri: str, study: str) -> list[int]:
    """Proposes the one round of an optional refinement study (``scaling``, ``augmentation``).

    Its trials retrain the best trial of the study before it with the task changed by each
    proposed point (see ``kfnas.spaces.base.RefinementSpace``).

    Returns:
        The trial ids; empty when the experiment has no such study (the run switched it off).
    """
    if study not in open_experiment(experiment_uri).spec.studies:
        return []
    return propose_trials(experiment_uri, study, 1)


def select_winner(experiment_uri: str) -> tuple[str, list[int]]:
    """The trial the final training retrains: the best of the last study before ``final``.

    The chain is ``validation`` and then the refinement studies the experiment has, each refining
    the best of the one before; the winner comes from the last of them with a completed trial (a
    refinement study whose every trial failed falls back to the study before it).

    Returns:
        ``(study, [trial id])``.

    Raises:
        StudyStoppedError: Not even the validation study has a completed trial.
    """
    exp = open_experiment(experiment_uri)
    names = list(exp.spec.studies)
    chain = names[names.index(VALIDATION) : names.index(FINAL)] if FINAL in names else [VALIDATION]
    for study in reversed(chain[1:]):
        if any(r is not None and r.completed for _, r in exp.records.history(study)):
            return study, select_top(experiment_uri, study, 1)
    return VALIDATION, select_top(experiment_uri, VALIDATION, 1)


def _refined_trial(exp: Experiment, study: str) -> TrialSpec:
    """The trial a refinement study starts from: the best of the study before it."""
    names = list(exp.spec.studies)
    previous = names[names.index(study) - 1]
    (best,) = select_top(exp.uri, previous, 1)
    return exp.records.read_spec(previous, best)


def _refining(
    trial: TrialSpec, base: TrialSpec, space: Any, point: Any, spec: ExperimentSpec
) -> TrialSpec:
    """``trial`` (a point of a refinement space) made to train ``base``'s network, refined."""
    task = spec.with_overrides(list(base.task_overrides)).task
    return dataclasses.replace(
        trial,
        space=base.space,
        arch_json=base.arch_json,
        source_study=base.study,
        source_trial=base.trial_id,
        task_overrides=(*base.task_overrides, *space.task_overrides(point, task)),
    )


def run_trial(experiment_uri: str, study: str, trial_id: int) -> TrialResult:
    """Trains, evaluates and measures one proposed trial and records how it ended.

    Idempotent: a trial whose ``result.json`` exists is returned as it is, without training, so a
    resubmitted pipeline skips finished work. The checkpoint and TensorBoard logs are uploaded to
    the trial's ``model/`` and ``logs/`` before ``result.json``, which is written last. A trial that
    fails or diverges is recorded as FAILED or INFEASIBLE; this function does not raise for it.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study's name.
        trial_id: A trial written by ``propose_trials``.

    Returns:
        The trial's result.
    """
    exp = open_experiment(experiment_uri)
    records = exp.records
    done = records.read_result(study, trial_id)
    if done is not None:
        return done
    from kfnas.trial import LOGS_DIR, MODEL_DIR, execute_trial  # TensorFlow: only to train.

    trial = records.read_spec(study, trial_id)
    with tempfile.TemporaryDirectory(prefix=f"kfnas-trial-{trial_id}-") as work:
        result = execute_trial(exp.spec, trial, work)
        uploads = {
            MODEL_DIR: exp.layout.trial_model_dir(study, trial_id),
            LOGS_DIR: exp.layout.trial_logs_dir(study, trial_id),
        }
        for local, remote in uploads.items():
            if (Path(work) / local).is_dir():
                exp.store.upload_dir(Path(work) / local, remote)
        if result.completed:
            model_uri = exp.store.uri(exp.layout.trial_model_dir(study, trial_id))
            result = dataclasses.replace(result, model_uri=model_uri)
    records.write_result(study, result)
    return result


def select_top(experiment_uri: str, study: str, k: int) -> list[int]:
    """The ids of the ``k`` best COMPLETED trials of a study, best first (ties: lower id first).

    Raises:
        StudyStoppedError: The study has no completed trial (the message lists why trials ended).
        ValueError: ``k`` is not positive.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    history = open_experiment(experiment_uri).records.history(study)
    completed = [r for _, r in history if r is not None and r.completed]
    if not completed:
        ended = [f"trial {r.trial_id}: {r.status.value}: {r.error}" for _, r in history if r]
        raise StudyStoppedError(
            f"study {study!r} has no completed trial to select from ({len(history)} proposed)"
            + ("; " + "; ".join(ended[-5:]) if ended else "")
        )
    ranked = sorted(completed, key=lambda r: (-(r.reward or 0.0), r.trial_id))
    return [r.trial_id for r in ranked[:k]]


def propose_retraining(
    experiment_uri: str, source_study: str, study: str, source_trial_ids: Sequence[int]
) -> list[int]:
    """Writes trials of ``study`` that train architectures of ``source_study`` trials again.

    Each new trial copies its source trial's space, DNA and architecture, takes ``study``'s budget
    (for the ``validation`` and ``final`` studies, the full-training budget) and a seed of its own,
    and records where it came from in ``source_study`` / ``source_trial``. A source trial already
    retrained in ``study`` keeps its trial, so calling this again returns the same ids.

    Args:
        experiment_uri: From ``init_experiment``.
        source_study: The study whose trials are retrained (``proxy``, ``validation``).
        study: The study the new trials belong to (``validation``, ``final``).
        source_trial_ids: The trials to retrain, e.g. from ``select_top``.

    Returns:
        The ids of the trials of ``study``, one per source trial, in the order given.

    Raises:
        SpecError: ``study`` is not a study of the experiment.
        ValueError: ``source_study`` is ``study``.
        ObjectNotFound: A source trial does not exist.
    """
    if source_study == study:
        raise ValueError(f"a study cannot retrain its own trials ({study!r})")
    exp = open_experiment(experiment_uri)
    study_spec = exp.spec.study(study)
    records = exp.records
    retrained = {
        spec.source_trial: spec.trial_id
        for spec, _ in records.history(study)
        if spec.source_study == source_study
    }
    next_id = records.next_trial_id(study)
    budget = dataclasses.asdict(study_spec.budget)
    for source_id in source_trial_ids:
        if source_id in retrained:
            continue
        source = records.read_spec(source_study, source_id)
        records.write_spec(
            dataclasses.replace(
                source,
                study=study,
                trial_id=next_id,
                round=1,
                budget=budget,
                seed=(study_spec.seed or 0) * 100003 + next_id,
                source_study=source_study,
                source_trial=source_id,
            )
        )
        retrained[source_id] = next_id
        next_id += 1
    return [retrained[source_id] for source_id in source_trial_ids]


def report(experiment_uri: str, html_path: str = "", markdown_path: str = "") -> dict[str, Any]:
    """Writes the experiment's report (HTML page and Markdown summary) under ``reports/``.

    The report covers the proxy study and, once it has trials, the validation study, with the
    objective metric of each validated architecture after the proxy and after full training, and
    their rank correlation. Writing it again replaces it (it shows the records as they are).

    Args:
        experiment_uri: From ``init_experiment``.
        html_path: If set, a local file that also gets the HTML page (a KFP ``HTML`` artifact).
        markdown_path: If set, a local file that also gets the Markdown (a KFP ``Markdown``
            artifact).

    Returns:
        ``{"html": URI, "markdown": URI, "kendall_tau": float or None}``.
    """
    from kfnas.reports import build_report, write_report  # matplotlib: only for reports.

    exp = open_experiment(experiment_uri)
    records = exp.records
    proxy = records.history(PROXY)
    validation = records.history(VALIDATION) if VALIDATION in exp.spec.studies else []
    metric = exp.spec.objectives.metric
    scores = {spec.trial_id: r.metrics.get(metric) for spec, r in proxy if r and r.completed}
    pairs = [
        (scores[spec.source_trial], r.metrics[metric])
        for spec, r in validation
        if r and r.completed and metric in r.metrics and scores.get(spec.source_trial) is not None
    ]
    built = build_report(
        exp.spec,
        proxy,
        validation or None,
        pairs=pairs if validation else None,
        refinements=_refinements(exp),
    )
    uris: dict[str, Any] = write_report(exp.store, exp.layout, built)
    for path, text in ((html_path, built.html), (markdown_path, built.markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    return {**uris, "kendall_tau": built.kendall_tau}


def _refinements(exp: Experiment) -> list[Any]:
    """The refinement studies between validation and final, with what each trial changed."""
    from kfnas.reports import Refinement

    names = list(exp.spec.studies)
    if VALIDATION not in names or FINAL not in names:
        return []
    out = []
    for study in names[names.index(VALIDATION) + 1 : names.index(FINAL)]:
        history = exp.records.history(study)
        choices = {}
        for spec, _ in history:
            inherited = 0
            if spec.source_study:
                source = exp.records.read_spec(spec.source_study, spec.source_trial or 0)
                inherited = len(source.task_overrides)
            own = spec.task_overrides[inherited:]
            choices[spec.trial_id] = ", ".join(o.removeprefix("task.") for o in own) or "-"
        out.append(Refinement(study, exp.spec.studies[study].space, history, choices))
    return out


def export_model(
    experiment_uri: str, study: str, trial_id: int, version: str, run_id: str = "", image: str = ""
) -> str:
    """Exports a completed trial as a SavedModel to the experiment's ``export/<version>`` folder.

    The trial's model is rebuilt from its ``arch_json``, its checkpoint restored and the SavedModel
    written with its serving signatures and ``export.json`` (``kfnas.export``); then the handoff
    package is added (``kfnas.handoff``: ``model_card.md``, ``handoff.json``) and, last, the
    experiment's ``export/latest`` pointer moves to this version. Earlier versions stay. An export
    already finished in that folder is kept: running this again returns its URI (and completes a
    handoff that a stopped run left unwritten).

    Args:
        experiment_uri: From ``init_experiment``.
        study: The trial's study (the search pipeline exports its ``final`` trial).
        trial_id: A COMPLETED trial.
        version: The export's folder name, e.g. ``v1`` (letters, digits, ``.``, ``-``, ``_``).
        run_id: The KFP run id recorded in ``handoff.json`` (default: ``$KFNAS_RUN_ID`` or none).
        image: The runtime image reference recorded in ``handoff.json`` (default: none).

    Returns:
        The URI of the export folder.

    Raises:
        ValueError: The trial is not COMPLETED, the version is not a valid folder name, or the
            folder holds the export of another trial (export to a new version).
    """
    return _export(open_experiment(experiment_uri), study, trial_id, version, run_id, image)


def _export(
    exp: Experiment, study: str, trial_id: int, version: str, run_id: str, image: str
) -> str:
    """``export_model`` on an opened experiment (also the publishing half of a retraining)."""
    from kfnas.export import RECORD_FILE, export_saved_model  # TensorFlow: only to export.
    from kfnas.handoff import write_handoff

    folder = exp.layout.export_dir(version)
    uri = exp.store.uri(folder)
    if exp.store.exists(f"{folder}/{RECORD_FILE}"):
        done = json.loads(exp.store.read_text(f"{folder}/{RECORD_FILE}"))
        if (done.get("study"), done.get("trial_id")) != (study, trial_id):
            raise ValueError(
                f"{uri} already holds the export of {done.get('study')} trial "
                f"{done.get('trial_id')}; export {study} trial {trial_id} to another version"
            )
    else:
        result = exp.records.read_result(study, trial_id)
        if result is None or not result.completed:
            status = result.status.value if result else "not finished"
            raise ValueError(
                f"{study} trial {trial_id} is {status}: only a COMPLETED trial exports"
            )
        trial = exp.records.read_spec(study, trial_id)
        model_dir = exp.store.uri(exp.layout.trial_model_dir(study, trial_id))
        export_saved_model(exp.spec, trial, model_dir, uri, metrics=result.metrics)
    write_handoff(exp, version, run_id=run_id, image=image)
    return uri


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
    ``kfnas.retraining``.

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
    from kfnas.handoff import read_handoff
    from kfnas.retraining import new_data_overrides, plan_retraining

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

    Returns:
        The ``RetrainingRecord`` as a dict (``status``: ``published`` or ``rejected``).

    Raises:
        RetrainingFailedError: The trial did not complete (recorded as ``failed``); nothing
            published.
        RetrainingError: ``tolerance`` is not finite.
        ValueError: ``new_version`` has no retraining of that trial.
    """
    from kfnas.handoff import read_handoff
    from kfnas.retraining import (
        FAILED,
        PLANNED,
        PUBLISHED,
        RetrainingFailedError,
        judge_retraining,
        read_record,
        write_record,
    )

    exp = open_experiment(experiment_uri)
    record = read_record(exp, new_version)
    if record is None or (record.study, record.trial_id) != (study, trial_id):
        raise ValueError(f"no retraining of {study} trial {trial_id} to version {new_version!r}")
    if record.status == PLANNED:
        result = exp.records.read_result(study, trial_id)
        record = judge_retraining(record, result, read_handoff(previous_handoff_uri), tolerance)
        if record.status == PUBLISHED:
            uri = _export(exp, study, trial_id, new_version, run_id, image)
            record = dataclasses.replace(record, export_uri=uri)
        write_record(exp, record)
    if record.status == FAILED:
        raise RetrainingFailedError(
            f"the retraining to {new_version} failed, {record.previous_version} stays current: "
            f"{record.reason}"
        )
    return record.to_dict()


def _check_failures(study: str, history: list, limit: int) -> None:
    finished = [result for _, result in history if result is not None]
    recent = finished[-limit:]
    if len(recent) == limit and all(r.status is not TrialStatus.COMPLETED for r in recent):
        reasons = "\n  ".join(f"trial {r.trial_id}: {r.status.value}: {r.error}" for r in recent)
        raise StudyStoppedError(
            f"study {study!r} stopped: its last {limit} trials all failed:\n  {reasons}\n"
            f"Fix the cause (see each trial's logs/), or raise budget.max_consecutive_failures."
        )
