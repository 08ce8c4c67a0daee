"""What a run asks for beyond its YAML spec: named settings that become dotted overrides.

The search pipeline (and ``kfnas run``) shows a few spec keys as named parameters (the data, the
budgets, the latency target, ...) so that a KFP run form needs no YAML editing.
``ExperimentSettings`` holds them. An unset setting (an empty string or 0) keeps the spec's value;
each set one becomes a dotted override applied before the user's own overrides, which therefore
win. ``kfnas.validation.experiment_spec`` turns spec text, settings and overrides into the
validated, resolved spec that ``init_experiment`` writes.

To add a setting: add a field with an "unset" default to ``ExperimentSettings``, map it to its spec
key in ``_KEYS`` (or write its rule in ``ExperimentSettings.overrides``), and add the same
parameter to the ``init_experiment`` component and the search pipeline.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from typing import Any

from kfnas.config.spec import ExperimentSpec
from kfnas.config.strict import from_data
from kfnas.config.studies import FULL_TRAINING_STEPS_FACTOR, PROXY, VALIDATION

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


def demo_spec_yaml() -> str:
    """The text of the built-in demo spec, ``src/kfnas/demo.yaml``."""
    return importlib.resources.files("kfnas").joinpath("demo.yaml").read_text()
