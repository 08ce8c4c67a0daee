"""What a run asks for beyond its YAML spec: named settings, and the studies that retrain.

The search pipeline (and ``kfnas run``) shows a few spec keys as named parameters (the data, the
budgets, the latency target, ...) so that a KFP run form needs no YAML editing.
``ExperimentSettings`` holds them. An unset setting (an empty string or 0) keeps the spec's value;
each set one becomes a dotted override applied before the user's own overrides, which therefore
win. ``experiment_spec`` turns spec text, settings and overrides into the validated, resolved spec
that ``init_experiment`` writes.

The search pipeline runs the study chain ``proxy`` (the search) -> ``validation`` (the best proxy
architectures trained with the full budget) -> ``final`` (the winner trained once more, then
exported). ``complete_studies`` adds the retraining studies a spec does not define:

* ``validation``: the proxy study's space, its budget with ``train_steps`` multiplied by
  ``FULL_TRAINING_STEPS_FACTOR``;
* ``final``: the validation study's space and budget.

A spec may define either with only a ``budget``; its space then is the proxy study's (retraining
copies proxy architectures, so it never proposes from the space).

To add a setting: add a field with an "unset" default to ``ExperimentSettings``, map it to its spec
key in ``_KEYS`` (or write its rule in ``ExperimentSettings.overrides``), and add the same
parameter to the ``init_experiment`` component and the search pipeline.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from collections.abc import Sequence
from typing import Any

from kfnas._strict import from_data
from kfnas.spec import AlgorithmSpec, BudgetSpec, ExperimentSpec, StudySpec, parse_spec

#: The study the search pipeline searches in, and the two that retrain its best architectures.
PROXY = "proxy"
VALIDATION = "validation"
FINAL = "final"
#: The optional refinement studies the pipeline runs between validation and final training.
SCALING = "scaling"
AUGMENTATION = "augmentation"
#: The scaling study's space, and the augmentation study's by task kind (``augmentation_space``
#: picks another).
SCALING_SPACE = "spinenet_scaling"
DEFAULT_AUGMENTATION_SPACE = "randaugment_{kind}"
#: Evaluations of an augmentation trial (it reports the best) unless ``augmentation_evaluations``.
AUGMENTATION_EVALUATIONS = 3

#: A validation study the spec does not define trains this many times the proxy study's steps.
FULL_TRAINING_STEPS_FACTOR = 10

#: ``spec_yaml`` naming the built-in demo spec (``src/kfnas/demo.yaml``) instead of YAML text.
DEMO = "demo"

# Setting -> the dotted spec key it sets.
_KEYS = {
    "experiment_name": "name",
    "store_root": "store_root",
    "task_kind": "task.kind",
    "num_classes": "task.num_classes",
    "train_data": "data.train",
    "validation_data": "data.validation",
    "annotations": "data.annotations",
    "space": f"studies.{PROXY}.space",
    "rounds": f"studies.{PROXY}.budget.rounds",
    "trials_per_round": f"studies.{PROXY}.budget.trials_per_round",
    "proxy_train_steps": f"studies.{PROXY}.budget.train_steps",
    "proxy_batch_size": f"studies.{PROXY}.budget.batch_size",
    "full_train_steps": f"studies.{VALIDATION}.budget.train_steps",
    "full_batch_size": f"studies.{VALIDATION}.budget.batch_size",
    "metric": "objectives.metric",
}


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """Named shortcuts for spec keys; an empty string or 0 leaves the spec's value.

    Attributes:
        experiment_name: ``name``: the experiment's folder in the store (a new name, a new
            experiment; the same name and spec resume it).
        store_root: ``store_root``: a local folder, a mounted volume or ``gs://bucket/prefix``.
        task_kind: ``task.kind`` (``detection``, ...).
        num_classes: ``task.num_classes``.
        train_data: ``data.train``: file pattern of the training TFRecords.
        validation_data: ``data.validation``: file pattern of the validation TFRecords.
        annotations: ``data.annotations``: COCO annotation JSON for detection evaluation.
        space: ``studies.proxy.space``: the search space.
        algorithm: The proxy study's algorithm; a different name than the spec's drops the spec's
            algorithm options (give new ones as overrides).
        rounds: ``studies.proxy.budget.rounds`` (the pipeline sets it to its compiled rounds).
        trials_per_round: ``studies.proxy.budget.trials_per_round``.
        proxy_train_steps: ``studies.proxy.budget.train_steps``.
        proxy_batch_size: ``studies.proxy.budget.batch_size``.
        full_train_steps: ``studies.validation.budget.train_steps``, the full training of the
            validation and (unless the spec gives it another budget) final studies.
        full_batch_size: ``studies.validation.budget.batch_size``.
        metric: ``objectives.metric``: the evaluation metric the reward is built on.
        latency_target_ms: The target of the ``latency_ms`` constraint; one is added (``hard``)
            if the spec has none.
        scaling_trials: Adds (or sizes) the ``scaling`` study: this many trials of
            ``spinenet_scaling`` over the best validated architecture, one round.
        scaling_train_steps: Training steps of each scaling trial (default: the full training's).
        augmentation_space: The ``augmentation`` study's space (default:
            ``randaugment_<task kind>``).
        augmentation_trials: Adds (or sizes) the ``augmentation`` study: this many policies
            trained on the best architecture so far (scaled, if scaling ran), one round.
        augmentation_train_steps: Training steps of each augmentation trial (default: the full
            training's: augmentation trials train to the end, no proxy).
        augmentation_evaluations: Evaluations per augmentation trial; it reports the best
            (default ``AUGMENTATION_EVALUATIONS``).
    """

    experiment_name: str = ""
    store_root: str = ""
    task_kind: str = ""
    num_classes: int = 0
    train_data: str = ""
    validation_data: str = ""
    annotations: str = ""
    space: str = ""
    algorithm: str = ""
    rounds: int = 0
    trials_per_round: int = 0
    proxy_train_steps: int = 0
    proxy_batch_size: int = 0
    full_train_steps: int = 0
    full_batch_size: int = 0
    metric: str = ""
    latency_target_ms: float = 0.0
    scaling_trials: int = 0
    scaling_train_steps: int = 0
    augmentation_space: str = ""
    augmentation_trials: int = 0
    augmentation_train_steps: int = 0
    augmentation_evaluations: int = 0

    @classmethod
    def from_kwargs(cls, settings: dict[str, Any]) -> ExperimentSettings:
        """Builds settings from keyword arguments, strictly.

        Raises:
            SpecError: An unknown setting (the message lists the known ones) or a wrong type.
        """
        return from_data(cls, settings, "settings")

    def overrides(self, spec: ExperimentSpec) -> list[str]:
        """The dotted overrides that apply the set settings to ``spec`` (the spec as written)."""
        out = [
            f"{key}={json.dumps(getattr(self, name))}"
            for name, key in _KEYS.items()
            if getattr(self, name)
        ]
        if self.full_batch_size and not self.full_train_steps and VALIDATION not in spec.studies:
            proxy_steps = self.proxy_train_steps or _proxy_budget(spec).get("train_steps", 0)
            steps = proxy_steps * FULL_TRAINING_STEPS_FACTOR
            out.append(f"{_KEYS['full_train_steps']}={steps}")
        if self.algorithm and self.algorithm != _proxy_algorithm(spec):
            out.append(f"studies.{PROXY}.algorithm={json.dumps({'name': self.algorithm})}")
        if self.latency_target_ms:
            out.append(_latency_override(spec, self.latency_target_ms))
        return out


def _proxy_budget(spec: ExperimentSpec) -> dict[str, Any]:
    study = spec.studies.get(PROXY)
    budget = study.budget if study is not None and study.budget else spec.budget
    return dataclasses.asdict(budget)


def _proxy_algorithm(spec: ExperimentSpec) -> str:
    study = spec.studies.get(PROXY)
    return (study.algorithm if study is not None and study.algorithm else spec.algorithm).name


def _latency_override(spec: ExperimentSpec, target: float) -> str:
    constraints = spec.objectives.constraints
    for i, constraint in enumerate(constraints):
        if constraint.measure == "latency_ms":
            return f"objectives.constraints.{i}.target={json.dumps(target)}"
    added = [*map(dataclasses.asdict, constraints)]
    added.append({"measure": "latency_ms", "target": target, "form": "hard"})
    return f"objectives.constraints={json.dumps(added)}"


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
        studies[VALIDATION] = dataclasses.replace(
            spec.studies[PROXY], budget=dataclasses.replace(proxy.budget, train_steps=steps)
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


def _refinement_studies(
    spec: ExperimentSpec, settings: ExperimentSettings, full: BudgetSpec
) -> dict[str, StudySpec]:
    """The refinement studies of the run: the spec's, and those the settings add or size."""
    out = {}
    one_round = dataclasses.replace(full, rounds=1)
    asked = {
        SCALING: (SCALING_SPACE, settings.scaling_trials, settings.scaling_train_steps, 0),
        AUGMENTATION: (
            settings.augmentation_space or DEFAULT_AUGMENTATION_SPACE.format(kind=spec.task.kind),
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
    from kfnas.registry import RegistryError
    from kfnas.spaces import get_space
    from kfnas.spaces.base import is_refinement

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


def demo_spec_yaml() -> str:
    """The text of the built-in demo spec, ``src/kfnas/demo.yaml``."""
    return importlib.resources.files("kfnas").joinpath("demo.yaml").read_text()


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
    return complete_studies(spec, settings).validate().resolved()
