"""The checks behind ``validate(spec)``: everything knowable before a trial starts.

Each check returns messages that name the key and say what to change; ``spec_problems`` gathers them
all so a user fixes a spec in one pass. They need the registries, so they live above them rather
than in ``kfnas.config``, which stays free of them.

To extend: write a ``_<part>_problems(spec)`` function returning a list of messages and add it to
``_CHECKS``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import pyglove as pg

from kfnas.config.spec import (
    CONSTRAINT_MEASURES,
    MULTI_FIDELITY_SCHEDULERS,
    ExperimentSpec,
    SpecError,
    StudySpec,
)
from kfnas.config.studies import CHAIN, PROXY, RETRAINING, StudyRole
from kfnas.launch.base import JOB_KINDS, MEASURE_KIND
from kfnas.registry import RegistryError
from kfnas.search.algorithms import ALGORITHMS
from kfnas.search.asha import HalvingSchedule
from kfnas.search.rewards import REWARDS
from kfnas.search.stopping import STOPPING_RULES, stopping_problems
from kfnas.spaces import declared_options, get_space
from kfnas.spaces.base import is_refinement
from kfnas.spaces.options import Option
from kfnas.store import root_problems
from kfnas.tasks import TASKS
from kfnas.tasks.frameworks import framework_of

#: Studies that retrain trials chosen from another study (never multi-fidelity).
RETRAINED = (*(r for r in CHAIN if r.role == "retrain"), StudyRole(RETRAINING, "retrain"))

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def _name_problems(spec: ExperimentSpec) -> list[str]:
    if _NAME.match(spec.name):
        return []
    return [
        f"name {spec.name!r} must be 1-63 letters, digits, '-' or '_', starting with a letter or "
        f"digit (it names the experiment's folder in the store)"
    ]


def _task_problems(spec: ExperimentSpec) -> list[str]:
    """The task's checks, its options checked against its knobs and its spaces' declared ones."""
    out = spec.task.problems()
    if spec.task.kind not in TASKS:
        return [*out, f"task.kind: {TASKS.unknown_message(spec.task.kind)}"]
    return out + TASKS.get(spec.task.kind).option_problems(spec.task, _space_options(spec))


def _space_options(spec: ExperimentSpec) -> dict[str, Option] | None:
    """The ``task.options`` knobs the studies' spaces declare (``None``: a space does not load).

    A study whose space does not load is reported by ``_study_problems``; then every registered
    space's knobs are accepted rather than refusing the knobs that space may read.
    """
    spaces = []
    for study in spec.studies.values():
        if study.space:
            try:
                spaces.append(get_space(study.space))
            except RegistryError:
                return None
    return declared_options(spec.task.kind, spaces)


def _budget_problems(spec: ExperimentSpec) -> list[str]:
    return spec.budget.problems("budget")


def _refinement_problems(spec: ExperimentSpec, name: str, space: Any) -> list[str]:
    """A refinement study needs a study before it whose trials train a network it can refine."""
    where = f"studies.{name}.space {space.name!r}"
    names = list(spec.studies)
    if names.index(name) == 0:
        return [
            f"{where} refines the best trial of the study before it, and {name} is the first "
            f"study: put an architecture study (e.g. proxy: {{space: spinenet}}) before it"
        ]
    network = spec.studies[names[0]].space
    problems = [*space.base_problems(network), *space.objective_problems(spec.objectives)]
    return [f"{where}: {m}" for m in problems]


def _study_problems(spec: ExperimentSpec) -> list[str]:
    if not spec.studies:
        return [
            "studies is empty: add at least one study, e.g. studies: {proxy: {space: spinenet}}"
        ]
    out = []
    num_objectives = 1 + len(spec.objectives.constraints)
    for name, study in spec.studies.items():
        where = f"studies.{name}"
        if not _NAME.match(name):
            out.append(f"{where}: a study name must be letters, digits, '-' or '_'")
        if not study.space:
            out.append(f"{where}.space is empty: name a search space (kfnas spaces lists them)")
        else:
            try:
                space = get_space(study.space)
            except RegistryError as e:
                out.append(f"{where}.space: {e}")
            else:
                if spec.task.kind not in space.tasks:
                    out.append(
                        f"{where}.space {study.space!r} serves {', '.join(space.tasks)}, not "
                        f"task.kind {spec.task.kind!r}: pick a space for {spec.task.kind} or "
                        f"change the task"
                    )
                else:
                    out.extend(
                        f"{where}.space {study.space!r}: {m}"
                        for m in space.task_problems(spec.task)
                    )
                if is_refinement(space):
                    out.extend(_refinement_problems(spec, name, space))
        assert study.algorithm is not None and study.budget is not None  # resolved() sets them.
        if study.budget is not spec.budget:
            out.extend(study.budget.problems(f"{where}.budget"))
        try:
            algorithm = ALGORITHMS.get(study.algorithm.name)
        except RegistryError as e:
            out.append(f"{where}.algorithm.name: {e}")
        else:
            prefix = f"{where}.algorithm" if study.algorithm is not spec.algorithm else "algorithm"
            out.extend(
                f"{prefix}: {p}"
                for p in algorithm.problems(study.algorithm.options, num_objectives)
            )
            if algorithm.complete(study.algorithm.options).get("full") is True:
                out.extend(_full_grid_problems(name, study))
        out.extend(_early_stopping_problems(where, study))
        out.extend(_multi_fidelity_problems(where, study))
    return sorted(set(out), key=out.index)


def _early_stopping_problems(where: str, study: StudySpec) -> list[str]:
    """An unknown rule, bad options, or a study that never evaluates before its end."""
    stopping = study.early_stopping
    if not stopping.rule:
        if stopping.options:
            return [
                f"{where}.early_stopping.options is set but no rule is: set "
                f"{where}.early_stopping.rule to one of {', '.join(STOPPING_RULES.names())}"
            ]
        return []
    out = stopping_problems(stopping.rule, stopping.options, f"{where}.early_stopping")
    assert study.budget is not None
    if study.budget.evaluations < 2:
        out.append(
            f"{where}.early_stopping: the rule decides at a trial's periodic evaluations, but "
            f"{where}.budget.evaluations is {study.budget.evaluations}: set it to at least 2 "
            f"(e.g. 4: an evaluation every quarter of the training)"
        )
    if study.multi_fidelity.scheduler:
        out.append(
            f"{where}: early_stopping and multi_fidelity both cut hopeless trials short; use one "
            f"of them (unset {where}.early_stopping.rule or {where}.multi_fidelity.scheduler)"
        )
    return out


def _multi_fidelity_problems(where: str, study: StudySpec) -> list[str]:
    """An unknown scheduler, or a step budget that does not fit a halving schedule."""
    fidelity = study.multi_fidelity
    if not fidelity.scheduler:
        return []
    if any(role.name == where.removeprefix("studies.") for role in RETRAINED):
        return [
            f"{where}.multi_fidelity: a study that retrains chosen trials trains each to its "
            f"full budget; multi_fidelity belongs to a searched study such as "
            f"studies.{PROXY}: unset {where}.multi_fidelity.scheduler"
        ]
    if fidelity.scheduler not in MULTI_FIDELITY_SCHEDULERS:
        return [
            f"{where}.multi_fidelity.scheduler {fidelity.scheduler!r} is not known: use "
            f"{' or '.join(MULTI_FIDELITY_SCHEDULERS)}, or leave it empty for none"
        ]
    assert study.budget is not None
    schedule = HalvingSchedule(
        fidelity.min_steps, study.budget.train_steps, fidelity.reduction_factor
    )
    return [
        problem.replace("budget.train_steps", f"{where}.budget.train_steps")
        for problem in schedule.problems(f"{where}.multi_fidelity")
    ]


def _full_grid_problems(name: str, study: Any) -> list[str]:
    """A grid study asked to cover its whole space needs a budget of at least the grid's size."""
    try:
        size = pg.dna_spec(get_space(study.space).hyper()).space_size
    except RegistryError:
        return []  # reported with the space
    budget = study.budget.rounds * study.budget.trials_per_round
    if budget >= size:
        return []
    return [
        f"studies.{name}: the grid of {study.space} has {size} points but the budget allows "
        f"{budget} trials ({study.budget.rounds} rounds x {study.budget.trials_per_round}): raise "
        f"studies.{name}.budget.trials_per_round or rounds, or set "
        f"studies.{name}.algorithm.options.full=false to sample the grid's first {budget} points"
    ]


def _objective_problems(spec: ExperimentSpec) -> list[str]:
    objectives = spec.objectives
    out = []
    if not objectives.metric:
        out.append("objectives.metric is empty: name the evaluation metric to maximize, e.g. AP")
    elif spec.task.kind in TASKS:
        names = TASKS.get(spec.task.kind).metric_names
        if objectives.metric not in names:
            out.append(
                f"objectives.metric {objectives.metric!r} is not a metric the "
                f"{spec.task.kind} task reports: use one of {', '.join(names)}"
            )
    if objectives.reward not in REWARDS:
        out.append(f"objectives.reward: {REWARDS.unknown_message(objectives.reward)}")
    seen = set()
    for i, c in enumerate(objectives.constraints):
        where = f"objectives.constraints.{i}"
        if c.measure not in CONSTRAINT_MEASURES:
            out.append(
                f"{where}.measure {c.measure!r} is unknown; "
                f"use one of {', '.join(CONSTRAINT_MEASURES)}"
            )
        if c.measure in seen:
            out.append(f"{where}.measure {c.measure!r} is constrained twice: keep one")
        seen.add(c.measure)
        if not c.target > 0:
            out.append(f"{where}.target must be positive, got {c.target}")
        if c.exponent is not None and not c.exponent > 0:
            out.append(f"{where}.exponent must be positive, got {c.exponent}")
    if objectives.constraints and objectives.reward == "metric":
        out.append(
            "objectives.reward is 'metric', which ignores objectives.constraints: "
            "use reward 'mnas' or remove the constraints"
        )
    return out


def _measurement_problems(spec: ExperimentSpec) -> list[str]:
    out = spec.measurement.problems()
    for i, c in enumerate(spec.objectives.constraints):
        mode = c.measure.removeprefix("tflite_").removesuffix("_latency_ms")
        if c.measure.startswith("tflite_") and mode not in spec.measurement.tflite:
            out.append(
                f"objectives.constraints.{i} constrains {c.measure!r} but measurement.tflite "
                f"does not ask for the {mode!r} TensorFlow Lite measurement: add {mode!r} to "
                f"measurement.tflite"
            )
    return out


def latency_device_problems(spec: ExperimentSpec, device: str) -> list[str]:
    """Whether ``spec`` may be measured on ``device`` (the run's profile's latency device).

    Args:
        spec: The experiment spec; ``measurement.device`` empty accepts any device.
        device: The device this run measures on: the profile's ``latency.device`` (the pods'
            ``KFNAS_LATENCY_DEVICE``), or ``local`` for a run without a cluster profile.
    """
    wanted = spec.measurement.device
    if not wanted or wanted == device:
        return []
    return [
        f"measurement.device is {wanted!r} but this run measures latency on {device!r}: no "
        f"profile of this run defines {wanted!r}. Compile the pipeline with a cluster profile "
        f"whose steps.latency.device is {wanted!r} (pipelines/profiles/*.yaml), or set "
        f"measurement.device to {device!r} (or empty: whichever device the run measures on)"
    ]


#: The launch settings' job kinds that train trials (the profile's ``steps.trial`` and
#: ``steps.training``): every job kind but the measurement's.
TRIAL_JOB_KINDS = tuple(kind for kind in JOB_KINDS if kind != MEASURE_KIND)


def trial_pod_problems(
    spec: ExperimentSpec, settings: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Whether the run's trial pods fit how the task kind's framework trains a trial.

    A framework that trains each trial in one process on one device (``Framework.multi_device``
    false: PyTorch here) would leave the other accelerators and pods of a larger trial pod idle,
    paid for; such a run is refused before any trial is launched.

    Args:
        spec: The experiment spec.
        settings: The launch config's pod settings by job kind (``PodSettings`` fields:
            ``accelerator_type``, ``accelerator_count``, ``workers``).
    """
    framework = framework_of(TASKS.get(spec.task.kind))
    if framework.multi_device:
        return []
    problems = []
    for job in TRIAL_JOB_KINDS:
        pod = settings.get(job) or {}
        count, workers = int(pod.get("accelerator_count") or 0), int(pod.get("workers") or 1)
        if count <= 1 and workers <= 1:
            continue
        kind = pod.get("accelerator_type") or "accelerators"
        problems.append(
            f"task.kind {spec.task.kind!r} trains each trial with {framework.name} in one "
            f"process on one device, but the cluster profile's steps.{job} gives a trial "
            f"{workers} pod(s) with {count} {kind} each: all but one would idle. Set "
            f"steps.{job}.accelerator.count to 1 and steps.{job}.workers to 1 in the profile, "
            f"or use a task kind that trains across devices"
        )
    return problems


def _store_problems(spec: ExperimentSpec) -> list[str]:
    return [f"store_root: {p}" for p in root_problems(spec.store_root)]


_CHECKS: tuple[Callable[[ExperimentSpec], list[str]], ...] = (
    _name_problems,
    _task_problems,
    _budget_problems,
    _study_problems,
    _objective_problems,
    _measurement_problems,
    _store_problems,
)


def spec_problems(spec: ExperimentSpec) -> list[str]:
    """Every problem of a resolved spec, as messages that say what to change."""
    return [message for check in _CHECKS for message in check(spec)]


def resolve(spec: ExperimentSpec) -> ExperimentSpec:
    """``spec.resolved()``, with an empty ``objectives.metric`` set to the task's default metric."""
    resolved = spec.resolved()
    if not resolved.objectives.metric and spec.task.kind in TASKS:
        metric = TASKS.get(spec.task.kind).default_metric
        objectives = dataclasses.replace(resolved.objectives, metric=metric)
        resolved = dataclasses.replace(resolved, objectives=objectives)
    return resolved


def validate(spec: ExperimentSpec) -> ExperimentSpec:
    """Checks everything that can be checked before a trial starts.

    Returns:
        The spec, resolved (``resolve``).

    Raises:
        SpecError: One message per problem found, each saying what to change.
    """
    resolved = resolve(spec)
    problems = spec_problems(resolved)
    if problems:
        raise SpecError("the experiment spec is not valid:\n  - " + "\n  - ".join(problems))
    return resolved


def check_data(spec: ExperimentSpec) -> None:
    """Reads a bounded sample of the experiment's data and refuses data its task cannot use.

    Raises:
        SpecError: One line per problem, each naming the file and the fix.
    """
    problems = TASKS.get(spec.task.kind).data_problems(spec.task, spec.data)
    if problems:
        raise SpecError("the experiment's data cannot be used:\n  - " + "\n  - ".join(problems))
