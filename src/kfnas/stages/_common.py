"""Helpers the stages share: no stage calls another stage, they all call these.

Proposing a round (``propose_round``, which also keeps the study's search snapshot), ASHA's
promotions (``promote_trials``), ranking a study's completed trials (``best_trials``), the
per-trial seed (``trial_seed``), the stop after consecutive failures (``check_failures``), the
export of a trial with its handoff (``export_trial``) and the creation of an experiment
(``create_experiment``) each live here once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pyglove as pg

from kfnas.config.spec import ExperimentSpec, SpecError, StudySpec
from kfnas.records.trial import RecordError, TrialResult, TrialSpec, TrialStatus
from kfnas.search.asha import HalvingSchedule, RungTrial, promotions
from kfnas.search.controller import SearchSnapshot, history_from_records, propose_with_state
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, decision_values, is_refinement, materialize
from kfnas.store import (
    Experiment,
    ExperimentLayout,
    ObjectNotFound,
    experiment_uri,
    open_experiment,
    open_store,
)
from kfnas.store.schemes import store_problems

History = list[tuple[TrialSpec, TrialResult | None]]

log = logging.getLogger(__name__)


class StudyStoppedError(RuntimeError):
    """A study that must not go on (for example too many failed trials in a row)."""


def create_experiment(spec: ExperimentSpec) -> Experiment:
    """Writes ``spec`` as a new experiment's ``experiment.json``, or resumes the same one.

    Raises:
        SpecError: The store holds an experiment of that name with a different spec, or cannot
            hold one (it must take create-only and conditional writes:
            ``kfnas.store.schemes.store_problems``).
    """
    store = open_store(spec.store_root)
    path = ExperimentLayout(spec.name).experiment_json()
    if store.exists(path):
        if ExperimentSpec.from_json(store.read_text(path)) != spec:
            raise SpecError(
                f"the store already holds an experiment {spec.name!r} with a different spec at "
                f"{store.uri(path)}: give this one another name, or rerun with the same spec "
                f"to resume"
            )
    else:
        if problems := store_problems(store):
            raise SpecError(
                f"the store {store.root} cannot hold an experiment:\n  - " + "\n  - ".join(problems)
            )
        store.write_text(path, spec.to_json(), if_absent=True)
    return open_experiment(experiment_uri(spec))


def write_tool_report(
    exp: Experiment, name: str, report: dict[str, Any], page: str, html_path: str
) -> dict[str, str]:
    """Writes a proxy-task tool's ``reports/<name>.json`` and ``.html`` (and ``html_path``).

    Args:
        exp: The tool's experiment.
        name: The reports' file name, without extension.
        report: The JSON report.
        page: Its HTML page.
        html_path: Also write the page here (the KFP step's HTML artifact); empty: nowhere.

    Returns:
        ``{"html": uri, "json": uri}`` of the reports in the store.
    """
    reports = exp.layout.reports_dir()
    exp.store.write_text(f"{reports}/{name}.json", json.dumps(report, indent=1))
    exp.store.write_text(f"{reports}/{name}.html", page)
    if html_path:
        with open(html_path, "w", encoding="utf-8") as out:
            out.write(page)
    return {
        "html": exp.store.uri(f"{reports}/{name}.html"),
        "json": exp.store.uri(f"{reports}/{name}.json"),
    }


def trial_seed(study: StudySpec, trial_id: int) -> int:
    """The seed of a study's trial: the study's seed spread by a prime, plus the trial id."""
    return (study.seed or 0) * 100003 + trial_id


def best_trials(history: History, study: str, k: int) -> list[int]:
    """The ids of the ``k`` best COMPLETED trials of ``history``, best first (ties: lower id).

    With multi-fidelity (ASHA), an architecture counts once, by its highest rung's trial (a
    promoted trial's parent is left out), and trials of a higher rung rank before those of a
    lower one: their rewards come from longer training, which a lower rung's cannot match fairly.

    Raises:
        StudyStoppedError: No completed trial (the message lists why trials ended).
        ValueError: ``k`` is not positive.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    promoted = {spec.promoted_from for spec, _ in history if spec.promoted_from is not None}
    rungs = {spec.trial_id: spec.rung for spec, _ in history}
    completed = [
        r for _, r in history if r is not None and r.completed and r.trial_id not in promoted
    ]
    if not completed:
        ended = [f"trial {r.trial_id}: {r.status.value}: {r.error}" for _, r in history if r]
        raise StudyStoppedError(
            f"study {study!r} has no completed trial to select from ({len(history)} proposed)"
            + ("; " + "; ".join(ended[-5:]) if ended else "")
        )
    ranked = sorted(
        completed, key=lambda r: (-rungs.get(r.trial_id, 0), -(r.reward or 0.0), r.trial_id)
    )
    return [r.trial_id for r in ranked[:k]]


def halving_schedule(study: StudySpec) -> HalvingSchedule | None:
    """The study's ASHA schedule (``multi_fidelity``), or None without multi-fidelity."""
    fidelity = study.multi_fidelity
    if fidelity.scheduler != "asha":
        return None
    assert study.budget is not None  # resolved
    return HalvingSchedule.checked(
        fidelity.min_steps, study.budget.train_steps, fidelity.reduction_factor
    )


def promote_trials(exp: Experiment, study: str, n: int, history: History) -> list[TrialSpec]:
    """Writes up to ``n`` ASHA promotions of ``study`` (``kfnas.search.asha.promotions``).

    Each promotion is a new trial of the same architecture, seed and round as its parent, with
    ``rung`` and ``promoted_from`` set and its rung's ``train_steps``; ``run_trial`` continues it
    from the parent's checkpoint. Trials are judged by their reward. Returns the new trials' specs
    ([] without multi-fidelity or when nothing can be promoted).
    """
    schedule = halving_schedule(exp.spec.study(study))
    if schedule is None or n < 1:
        return []
    rung_trials = [
        RungTrial(
            trial_id=spec.trial_id,
            rung=spec.rung,
            value=result.reward if result is not None and result.completed else None,
            finished=result is not None,
            promoted_from=spec.promoted_from,
        )
        for spec, result in history
    ]
    specs = {spec.trial_id: spec for spec, _ in history}
    first = exp.records.next_trial_id(study)
    written = []
    for offset, (parent, rung) in enumerate(promotions(schedule, rung_trials, n)):
        source = specs[parent]
        trial = dataclasses.replace(
            source,
            trial_id=first + offset,
            rung=rung,
            promoted_from=parent,
            budget={**source.budget, "train_steps": schedule.rungs[rung]},
        )
        exp.records.write_spec(trial)
        written.append(trial)
    return written


def check_failures(study: str, history: History, limit: int) -> None:
    """Stops a study whose last ``limit`` finished trials all failed.

    Raises:
        StudyStoppedError: Naming each of those trials and what to do.
    """
    finished = [result for _, result in history if result is not None]
    recent = finished[-limit:]
    if len(recent) == limit and all(r.status is not TrialStatus.COMPLETED for r in recent):
        reasons = "\n  ".join(f"trial {r.trial_id}: {r.status.value}: {r.error}" for r in recent)
        raise StudyStoppedError(
            f"study {study!r} stopped: its last {limit} trials all failed:\n  {reasons}\n"
            f"Fix the cause (see each trial's logs/), or raise budget.max_consecutive_failures."
        )


def propose_round(
    exp: Experiment, study: str, round_index: int, n: int = 0, *, history: History | None = None
) -> list[int]:
    """Proposes round ``round_index`` of ``study`` and writes its ``trial.json`` files.

    ``n`` trials are proposed (0: the study's ``trials_per_round``); the search controller
    proposes as many as it has free slots. A refinement study's trials retrain the best trial of
    the study before it with each proposed point. ``history`` is the study's
    ``records.history(study)`` when the caller has just read it (else it is read here).

    The algorithm starts from the study's search snapshot (``ExperimentLayout.study_snapshot``)
    and replays only the trials since it; the new snapshot is written after the specs. A missing
    snapshot (the first round, or deleted), or one that cannot be read or does not fit (another
    algorithm, options, seed, space or version, other trials), is logged and the whole history
    replayed instead: the proposals are the same either way (``kfnas.search.propose``).

    A round that already has ``n`` trials returns their ids. A short one (a crash between writing
    k of its n specs) is completed when it is the study's last round: it is proposed again from
    the history without its trials (the same history and round give the same proposals), and the
    missing specs are written under the ids they would have had. A short round followed by later
    rounds stays as it is (those rounds were proposed from it), as does one whose re-proposal
    repeats an architecture the round already holds (results arrived since; a round may hold
    fewer than ``n`` trials, like one whose space ran out).

    Raises:
        StudyStoppedError: The last ``max_consecutive_failures`` trials all failed.
    """
    study_spec = exp.spec.study(study)
    records = exp.records
    history = records.history(study) if history is None else history
    check_failures(study, history, study_spec.budget.max_consecutive_failures)
    # ASHA's promotions train architectures the algorithm proposed already: it never sees them.
    history = [(s, r) for s, r in history if s.promoted_from is None]
    wanted = n or study_spec.budget.trials_per_round
    existing = {spec.trial_id: spec for spec, _ in history if spec.round == round_index}
    later = any(spec.round > round_index for spec, _ in history)
    if existing and (len(existing) >= wanted or later):
        return sorted(existing)
    before = [(s, r) for s, r in history if s.round < round_index] if existing else history
    snapshot = read_snapshot(exp, study)
    proposal = propose_with_state(
        study_spec, history_from_records(before), wanted, round_index=round_index, snapshot=snapshot
    )
    dnas = proposal.dnas
    space = get_space(study_spec.space)
    points = _HyperOnce(space)
    decision_spec = pg.dna_spec(points.hyper()) if dnas else None
    first = min(existing) if existing else records.next_trial_id(study)
    budget = dataclasses.asdict(study_spec.budget)
    if (schedule := halving_schedule(study_spec)) is not None:
        budget["train_steps"] = schedule.rungs[0]  # new architectures start at rung 0
    base = _refined_trial(exp, study) if is_refinement(space) else None
    held = {spec.dna_json for spec in existing.values()}
    ids = set(existing)
    for offset, dna in enumerate(dnas):
        trial_id = first + offset
        dna_json = pg.to_json_str(dna)
        if trial_id in existing or dna_json in held:
            continue
        trial = TrialSpec(
            experiment=exp.spec.name,
            study=study,
            trial_id=trial_id,
            round=round_index,
            space=study_spec.space,
            dna_json=dna_json,
            arch_json=architecture_json(points, dna),
            budget=budget,
            seed=trial_seed(study_spec, trial_id),
            decisions=_decisions(space, dna_json, decision_spec),
        )
        if base is not None:
            trial = _refining(trial, base, space, materialize(points, dna), exp.spec)
        records.write_spec(trial)
        ids.add(trial_id)
    if proposal.snapshot is not None:
        write_snapshot(exp, study, proposal.snapshot)
    return sorted(ids)


def read_snapshot(exp: Experiment, study: str) -> SearchSnapshot | None:
    """The study's search snapshot; None (logged) when it is missing or cannot be read."""
    path = exp.layout.study_snapshot(study)
    try:
        text = exp.store.read_text(path)
    except ObjectNotFound:
        log.info("%s: no search snapshot yet; the whole history is replayed", study)
        return None
    try:
        return SearchSnapshot.from_json(text, exp.store.uri(path))
    except RecordError as e:
        log.warning(
            "%s: the search snapshot is ignored (%s); the whole history is replayed", study, e
        )
        return None


def write_snapshot(exp: Experiment, study: str, snapshot: SearchSnapshot) -> None:
    """Stores the study's search snapshot (a cache: failing to write it only costs time)."""
    path = exp.layout.study_snapshot(study)
    try:
        exp.store.write_text(path, snapshot.to_json())
    except (OSError, ValueError) as e:
        log.warning("%s: the search snapshot was not written to %s: %s", study, path, e)


def _decisions(space: Any, dna_json: str, spec: Any) -> dict[str, Any]:
    """The trial spec's ``decisions``; ``{}`` (computed where needed) if they do not decode."""
    try:
        return decision_values(space, dna_json, spec=spec)
    except RecordError as e:
        log.warning("decisions of %s not recorded with the proposal: %s", dna_json[:80], e)
        return {}


class _HyperOnce:
    """A space's ``hyper()``, built once for the round (tens of milliseconds on a large space).

    What ``architecture_json`` and ``materialize`` read of a space; ``pg.materialize`` clones the
    hyper value before it decodes a DNA, so one value serves every trial of the round.
    """

    def __init__(self, space: Any):
        self._hyper = space.hyper()

    def hyper(self) -> Any:
        return self._hyper


def _refined_trial(exp: Experiment, study: str) -> TrialSpec:
    """The trial a refinement study starts from: the best of the study before it."""
    names = list(exp.spec.studies)
    previous = names[names.index(study) - 1]
    (best,) = best_trials(exp.records.history(previous), previous, 1)
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


def export_trial(
    exp: Experiment,
    study: str,
    trial_id: int,
    version: str,
    run_id: str,
    image: str,
    *,
    serving: str = "",
) -> str:
    """Exports a COMPLETED trial to ``export/<version>`` and writes its handoff.

    The version is claimed first (``kfnas.export.package.claim_export``, a lease in the store), so
    two exporters of it never mix their files: the one that holds the claim exports, the other
    waits for its handoff, and an exporter of another trial to the same version is refused. See
    the ``export_model`` stage; the retraining's ``publish_if_not_worse`` publishes through this
    too. ``serving`` is the JSON of ``kfnas.export.kserve.ServingSettings`` for the KServe
    manifest (empty: the defaults), read before anything is exported so a bad one fails at once.
    """
    from kfnas.export.kserve import ServingSettings
    from kfnas.export.package import claim_export, write_handoff
    from kfnas.export.saved_model import RECORD_FILE
    from kfnas.store.lease import ClaimOutcome
    from kfnas.tasks import TASKS
    from kfnas.tasks.frameworks import framework_of

    # The task's framework exports: a SavedModel (TensorFlow), TorchScript and ONNX (PyTorch).
    export_model = framework_of(TASKS.get(exp.spec.task.kind)).entry("exporter")

    settings = ServingSettings.from_json(serving) if serving else None
    folder = exp.layout.export_dir(version)
    uri = exp.store.uri(folder)
    with claim_export(exp.store, exp.layout, version, study, trial_id) as claim:
        if claim.outcome is ClaimOutcome.ACQUIRED and not exp.store.exists(
            f"{folder}/{RECORD_FILE}"
        ):
            result = exp.records.read_result(study, trial_id)
            if result is None or not result.completed:
                status = result.status.value if result else "not finished"
                raise ValueError(
                    f"{study} trial {trial_id} is {status}: only a COMPLETED trial exports"
                )
            trial = exp.records.read_spec(study, trial_id)
            model_dir = exp.store.uri(exp.layout.trial_model_dir(study, trial_id))
            export_model(exp.spec, trial, model_dir, uri, metrics=result.metrics, check=claim.check)
        write_handoff(exp, version, run_id=run_id, image=image, serving=settings)
    return uri
