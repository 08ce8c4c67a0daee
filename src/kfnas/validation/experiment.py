"""The resolved spec of a run: spec text, settings and overrides, the chain completed, checked.

``experiment_spec`` is what the ``init_experiment`` stage, ``kfnas run`` and ``kfnas submit`` call:
it applies the settings (``kfnas.config.settings``) and overrides, adds the studies of the chain
the spec lacks (``complete_studies``, from ``kfnas.config.studies``), then validates and resolves.
``complete_studies`` looks up refinement spaces for their default algorithm, which is why it lives
here, above the registries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kfnas.config.settings import DEMO, ExperimentSettings, demo_spec_yaml
from kfnas.config.spec import (
    AlgorithmSpec,
    BudgetSpec,
    EarlyStoppingSpec,
    ExperimentSpec,
    MultiFidelitySpec,
    StudySpec,
    parse_spec,
)
from kfnas.config.studies import (
    AUGMENTATION,
    AUGMENTATION_EVALUATIONS,
    FINAL,
    FULL_TRAINING_STEPS_FACTOR,
    PROXY,
    SCALING,
    SCALING_SPACE,
    VALIDATION,
)
from kfnas.registry import RegistryError
from kfnas.spaces import get_space
from kfnas.spaces.base import is_refinement
from kfnas.tasks import TASKS
from kfnas.validation.checks import validate


def complete_studies(
    spec: ExperimentSpec, settings: ExperimentSettings | None = None
) -> ExperimentSpec:
    """Adds the ``validation`` and ``final`` studies a spec with a ``proxy`` study lacks.

    Also gives a ``validation`` or ``final`` study defined without a space the proxy's space, adds
    the refinement studies the settings ask for (``scaling``, ``augmentation``), gives refinement
    studies without a budget one round of the full-training budget, and orders the chain
    ``proxy, validation, <refinements>, final``. A spec without a ``proxy`` study is returned as
    it is.
    """
    if PROXY not in spec.studies:
        return spec
    proxy = spec.study(PROXY)
    assert proxy.budget is not None  # resolved
    studies = dict(spec.studies)
    if VALIDATION not in studies:
        steps = proxy.budget.train_steps * FULL_TRAINING_STEPS_FACTOR
        # Full training: the proxy's space and algorithm, neither its stopping nor its rungs.
        studies[VALIDATION] = dataclasses.replace(
            spec.studies[PROXY],
            budget=dataclasses.replace(proxy.budget, train_steps=steps),
            early_stopping=EarlyStoppingSpec(),
            multi_fidelity=MultiFidelitySpec(),
        )
    if FINAL not in studies:
        studies[FINAL] = studies[VALIDATION]
    for name in (VALIDATION, FINAL):
        if not studies[name].space:
            studies[name] = dataclasses.replace(studies[name], space=proxy.space)
    full = studies[VALIDATION].budget or spec.budget
    studies.update(_refinement_studies(spec, settings or ExperimentSettings(), full))
    # proxy, validation, the refinement studies in the spec's order (each refines the best trial
    # of the one before it), final.
    middle = [n for n in studies if n not in (PROXY, VALIDATION, FINAL)]
    ordered = {n: studies[n] for n in (PROXY, VALIDATION, *middle, FINAL)}
    return dataclasses.replace(spec, studies=_default_algorithms(ordered))


def _default_augmentation_space(kind: str) -> str:
    """The task kind's ``augmentation_space``, or ``""`` (reported as a study without a space)."""
    space = TASKS.get(kind).augmentation_space if kind in TASKS else None
    return space or ""


def _refinement_studies(
    spec: ExperimentSpec, settings: ExperimentSettings, full: BudgetSpec
) -> dict[str, StudySpec]:
    """The refinement studies of the run: the spec's, and those the settings add or size."""
    out = {}
    one_round = dataclasses.replace(full, rounds=1)
    asked = {
        SCALING: (SCALING_SPACE, settings.scaling_trials, settings.scaling_train_steps, 0),
        AUGMENTATION: (
            settings.augmentation_space or _default_augmentation_space(spec.task.kind),
            settings.augmentation_trials,
            settings.augmentation_train_steps,
            settings.augmentation_evaluations or AUGMENTATION_EVALUATIONS,
        ),
    }
    for name, (space, trials, steps, evaluations) in asked.items():
        study = spec.studies.get(name)
        if study is None and not trials:
            continue
        study = study or StudySpec(space=space)
        if name == AUGMENTATION and settings.augmentation_space:
            study = dataclasses.replace(study, space=settings.augmentation_space)
        budget = study.budget or dataclasses.replace(
            one_round, evaluations=evaluations or one_round.evaluations
        )
        changes = {"trials_per_round": trials, "train_steps": steps}
        budget = dataclasses.replace(budget, **{k: v for k, v in changes.items() if v})
        out[name] = dataclasses.replace(study, budget=budget)
    return out


def _default_algorithms(studies: dict[str, StudySpec]) -> dict[str, StudySpec]:
    """Refinement studies without an algorithm take their space's default (grid for scaling)."""
    out = dict(studies)
    for name, study in studies.items():
        if study.algorithm is not None or not study.space:
            continue
        try:
            space = get_space(study.space)
        except RegistryError:
            continue  # validation reports it
        if is_refinement(space):
            out[name] = dataclasses.replace(
                study, algorithm=AlgorithmSpec(name=space.default_algorithm)
            )
    return out


def experiment_spec(
    spec_yaml: str,
    overrides: Sequence[str] = (),
    settings: ExperimentSettings | None = None,
) -> ExperimentSpec:
    """The validated, resolved spec of a run: spec text, then settings, then overrides.

    Args:
        spec_yaml: The experiment spec as YAML text, or ``"demo"`` (or empty) for the built-in
            demo spec.
        overrides: Dotted ``key=value`` overrides, applied last.
        settings: Named settings, applied before ``overrides``.

    Returns:
        The spec with its retraining studies completed (``complete_studies``), validated and
        resolved.

    Raises:
        SpecError: The spec, a setting or an override is invalid (every problem is listed).
    """
    text = demo_spec_yaml() if spec_yaml.strip() in ("", DEMO) else spec_yaml
    spec = parse_spec(text)
    extra = (settings or ExperimentSettings()).overrides(spec)
    spec = spec.with_overrides([*extra, *overrides])
    return validate(complete_studies(spec, settings))
