"""What a run asks for beyond its YAML spec: named settings that become dotted overrides.

The search pipeline (and ``kfnas run``) shows a few spec keys as named parameters (the data, the
budgets, the latency target, ...) so that a KFP run form needs no YAML editing.
``ExperimentSettings`` holds them. An unset setting (an empty string or 0) keeps the spec's value;
each set one becomes a dotted override applied before the user's own overrides, which therefore
win. ``kfnas.validation.experiment_spec`` turns spec text, settings and overrides into the
validated, resolved spec that ``init_experiment`` writes.

Each field of ``ExperimentSettings`` is the one declaration of its setting: its type, its "unset"
default and, through ``setting(...)``, its description (the search pipeline's parameter
description, line breaks included) and the dotted spec key it sets. The search pipeline's
docstring and its call of ``init_experiment`` are built from these fields; the signatures of the
``init_experiment`` component and of the pipeline, which KFP reads from source, are checked
against them by ``tests/config/test_settings_declaration.py``.

To add a setting: add one field ``name: type = setting(unset, "description", key="dotted.key")``
to ``ExperimentSettings`` (without ``key``, write its rule in ``ExperimentSettings.overrides`` or
``kfnas.validation.experiment``), then the parameter ``name: type`` to the ``init_experiment``
component and the search pipeline's signature (the test names what is missing or different).
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


def setting(default: Any, description: str, *, key: str = "", run_parameter: bool = True) -> Any:
    """Declares one setting: a dataclass field with its description and spec key.

    Args:
        default: The "unset" value (an empty string or 0), which keeps the spec's value.
        description: What it does, as the search pipeline's parameter description (with a
            newline where that description breaks its lines).
        key: The dotted spec key it sets; empty when a rule of its own applies it.
        run_parameter: Whether the search pipeline shows it as a run parameter (every setting
            does today; one the pipeline sets itself would not).
    """
    metadata = {"help": description, "key": key, "run_parameter": run_parameter}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """Named shortcuts for spec keys; an empty string or 0 leaves the spec's value.

    Each field's ``help`` (``dataclasses.fields(ExperimentSettings)[i].metadata``) says what it
    does, and its ``key`` which spec key it sets.
    """

    experiment_name: str = setting(
        "",
        "Name of the experiment in the store; the same name and spec resume\n"
        "it, so give a new name for a new search.",
        key="name",
    )
    store_root: str = setting(
        "",
        "Where everything is written: gs://bucket/prefix or a mounted volume path.",
        key="store_root",
    )
    task_kind: str = setting("", "What is learned: detection, ...", key="task.kind")
    num_classes: int = setting(
        0, "Number of classes (detection: without the background).", key="task.num_classes"
    )
    train_data: str = setting(
        "",
        "File pattern of the training TFRecords, e.g. gs://b/train-*.tfrecord.",
        key="data.train",
    )
    validation_data: str = setting(
        "",
        "File pattern of the validation TFRecords that score trials.",
        key="data.validation",
    )
    annotations: str = setting(
        "", "COCO annotation JSON of the validation data (detection).", key="data.annotations"
    )
    space: str = setting(
        "",
        "Search space of the proxy study (kfnas spaces lists them).",
        key=f"studies.{PROXY}.space",
    )
    # A different name than the spec's drops the spec's algorithm options (see ``overrides``).
    algorithm: str = setting(
        "", "Search algorithm (kfnas algorithms lists them); options go in overrides."
    )
    rounds: int = setting(
        0,
        "Rounds of proposals of the proxy study: it trains rounds x\n"
        "trials_per_round trials in all, parallelism at a time.",
        key=f"studies.{PROXY}.budget.rounds",
    )
    trials_per_round: int = setting(
        0,
        "Trials per round of the proxy search (see rounds).",
        key=f"studies.{PROXY}.budget.trials_per_round",
    )
    proxy_train_steps: int = setting(
        0, "Training steps of each proxy trial.", key=f"studies.{PROXY}.budget.train_steps"
    )
    proxy_batch_size: int = setting(
        0, "Batch size of each proxy trial.", key=f"studies.{PROXY}.budget.batch_size"
    )
    full_train_steps: int = setting(
        0,
        "Training steps of the full trainings (validation and final); 0 keeps\n"
        "the spec's, or 10x the proxy steps if the spec has no validation study.",
        key=f"studies.{VALIDATION}.budget.train_steps",
    )
    full_batch_size: int = setting(
        0,
        "Batch size of the full trainings.",
        key=f"studies.{VALIDATION}.budget.batch_size",
    )
    metric: str = setting(
        "",
        "Evaluation metric the reward is built on (AP, top_1_accuracy, ...).",
        key="objectives.metric",
    )
    # A ``latency_ms`` constraint (``hard``) is added if the spec has none (see ``overrides``).
    latency_target_ms: float = setting(
        0.0, "Target latency in ms of the MnasNet-style reward constraint."
    )
    # The refinement studies' settings are applied by ``kfnas.validation.experiment``.
    scaling_trials: int = setting(
        0,
        "Scaling study after validation (SpineNet spaces only): this many\n"
        "points of spinenet_scaling (432 in all, grid search) trained on the best\n"
        "validated architecture with the full budget; 0 switches it off.",
    )
    scaling_train_steps: int = setting(
        0, "Training steps of each scaling trial; 0: the full training's."
    )
    augmentation_space: str = setting(
        "",
        "Augmentation study's space (randaugment_detection,\n"
        "autoaugment_segmentation, ...); empty: randaugment for the task.",
    )
    augmentation_trials: int = setting(
        0,
        "Augmentation-policy study after scaling: this many policies\n"
        "trained on the best architecture so far (scaled, if scaling ran); 0 switches it\n"
        "off.",
    )
    augmentation_train_steps: int = setting(
        0,
        "Training steps of each augmentation trial; 0: the full\n"
        "training's (augmentation trials train to the end, no proxy).",
    )
    augmentation_evaluations: int = setting(
        0, "Evaluations per augmentation trial, which reports the best;\n0: 3."
    )

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
            f"{field.metadata['key']}={json.dumps(getattr(self, field.name))}"
            for field in dataclasses.fields(self)
            if field.metadata["key"] and getattr(self, field.name)
        ]
        if self.full_batch_size and not self.full_train_steps and VALIDATION not in spec.studies:
            proxy_steps = self.proxy_train_steps or _proxy_budget(spec).get("train_steps", 0)
            steps = proxy_steps * FULL_TRAINING_STEPS_FACTOR
            out.append(f"studies.{VALIDATION}.budget.train_steps={steps}")
        if self.algorithm and self.algorithm != _proxy_algorithm(spec):
            out.append(f"studies.{PROXY}.algorithm={json.dumps({'name': self.algorithm})}")
        if self.latency_target_ms:
            out.append(_latency_override(spec, self.latency_target_ms))
        return out


def run_parameters() -> list[dataclasses.Field]:
    """The settings the search pipeline shows as run parameters, in declaration order."""
    return [f for f in dataclasses.fields(ExperimentSettings) if f.metadata["run_parameter"]]


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
