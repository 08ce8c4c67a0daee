"""The search pipeline: proxy search, validation, scaling and augmentation, final training.

``build_search_pipeline(rounds, trials_per_round, parallelism, top_k, profile)`` returns the
``@dsl.pipeline`` function; its DAG is::

    init experiment
      -> round 1: propose -> round 1: trials [ParallelFor(ids, parallelism): run_trial]  (trial)
      -> round 2: propose (after every trial of round 1) -> ... -> round R
      -> select top k -> validation: propose (copies of the top k with the full budget)
      -> validation [ParallelFor: run_trial]                                          (training)
      -> scaling: propose -> scaling [ParallelFor: run_trial]     (optional; training)
      -> augmentation: propose -> augmentation [ParallelFor: run_trial] (optional; training)
      -> select the winner -> report
      -> final: propose (the winner, with its scaling and policy) -> final training   (training)
      -> export [export_model: SavedModel in the store's export/<model_version>]

KFP v2 has no loops, so the number of rounds and the parallelism are fixed when the pipeline is
compiled; everything else (trials per round, top k, data, budgets, ...) is a pipeline parameter.
Steps exchange only the experiment URI and trial ids: the store is the single source of truth,
every stage resumes, and a failed trial is recorded (the step succeeds), so a ParallelFor never
fails for one bad architecture. KFP caching is off for every step: stages already skip finished
work, and a cache hit would skip writes to a fresh store.

Brackets are sub-pipelines holding one loop over one component each. Two KFP 2.17 bugs shape them:
``kfp.local`` replaces, inside a ``ParallelFor``, every input that comes from another task's output
by the loop item (so loops read the experiment URI from their sub-pipeline's inputs), and the
compiler mixes up the Kubernetes settings of two sub-pipelines' executors of the same component
unless each sub-pipeline has a single executor (``tests/integration/test_pipeline_compile.py``
checks every step's settings).

A ``ClusterProfile`` (``pipelines/profiles.py``) gives each step its resources, by kind: ``trial``
for the proxy trials, ``training`` for the full trainings, ``light`` for everything else. Without a
profile the pipeline carries no platform settings (what ``kfp.local`` runs).

To add a step: write its stage and component, call the component in ``search_pipeline`` below
through ``steps.light`` (or ``steps.trial``/``steps.training``), wrapping it in a one-component
sub-pipeline like ``_train_each`` when it runs per trial, and order it with ``.after`` where it
reads what an earlier step wrote without taking its output.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature's types at runtime.
import dataclasses
from collections.abc import Callable
from typing import Any

from kfp import dsl
from kfp.dsl import PipelineTask

from kfnas.components import (
    export_model,
    init_experiment,
    propose_refinement,
    propose_retraining,
    propose_trials,
    report,
    run_trial,
    select_top,
    select_winner,
)
from kfnas.components._image import IMAGE
from kfnas.config.studies import AUGMENTATION, FINAL, PROXY, SCALING, VALIDATION
from kfnas.pipelines.profiles import ClusterProfile, apply_step_profile

PIPELINE_NAME = "kfnas-search"


@dataclasses.dataclass(frozen=True)
class _Steps:
    """Configures tasks by kind of step: display name, caching off, the profile's settings."""

    profile: ClusterProfile | None

    def _configure(self, kind: str, task: PipelineTask, name: str) -> PipelineTask:
        task.set_display_name(name).set_caching_options(enable_caching=False)
        if self.profile is not None:
            apply_step_profile(task, self.profile.step(kind))
        return task

    def group(self, task: PipelineTask, name: str) -> PipelineTask:
        """A sub-pipeline: a display name; its steps are configured inside it."""
        return task.set_display_name(name)

    def light(self, task: PipelineTask, name: str) -> PipelineTask:
        """A short CPU step: init, propose, select, report, export."""
        return self._configure("light", task, name)

    def trial(self, task: PipelineTask, name: str) -> PipelineTask:
        """A proxy trial."""
        return self._configure("trial", task, name)

    def training(self, task: PipelineTask, name: str) -> PipelineTask:
        """A full training (validation or final)."""
        return self._configure("training", task, name)


def _train_each(steps: _Steps, kind: str, parallelism: int) -> Callable[..., Any]:
    """A sub-pipeline that runs ``run_trial`` for each of a list of trials, as ``kind`` steps."""
    configure = steps.trial if kind == "trial" else steps.training

    @dsl.pipeline(name=f"{kind}-loop")
    def train_each(experiment_uri: str, study: str, trial_ids: list[int]):
        with dsl.ParallelFor(trial_ids, parallelism=parallelism) as trial_id:
            configure(
                run_trial(experiment_uri=experiment_uri, study=study, trial_id=trial_id),
                "trial" if kind == "trial" else "full training",
            )

    return train_each


def _export_each(steps: _Steps) -> Callable[..., Any]:
    """A sub-pipeline that exports each of a list of trials (the search exports one)."""

    @dsl.pipeline(name="export-loop")
    def export_each(experiment_uri: str, study: str, trial_ids: list[int], version: str):
        with dsl.ParallelFor(trial_ids, parallelism=1) as trial_id:
            steps.light(
                export_model(
                    experiment_uri=experiment_uri,
                    study=study,
                    trial_id=trial_id,
                    version=version,
                    # Recorded in handoff.json: the KFP run, and the image compiled in (the
                    # component cannot default to it: its source runs in the container).
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    image=IMAGE,
                ),
                "export",
            )

    return export_each


def _refine_winner(steps: _Steps, trainings: Any, experiment_uri: Any, after: Any) -> Any:
    """The optional scaling and augmentation studies, then the choice of the final trial.

    Each study proposes one round (none when the run switched it off: its loop then has no
    iteration) and trains its trials as full trainings: ``scaling`` over the best validated
    architecture, ``augmentation`` over the best trial so far. ``select_winner`` then names the
    study and trial the final training copies, with their scaling and policy.

    Returns:
        The ``select_winner`` task (outputs ``study`` and ``trial_ids``).
    """
    previous = after
    for study in (SCALING, AUGMENTATION):
        proposed = steps.light(
            propose_refinement(experiment_uri=experiment_uri, study=study), f"{study}: propose"
        ).after(previous)
        previous = steps.group(
            trainings(experiment_uri=experiment_uri, study=study, trial_ids=proposed.output),
            study,
        )
    return steps.light(select_winner(experiment_uri=experiment_uri), "select the winner").after(
        previous
    )


def _retrain(steps: _Steps, experiment_uri: Any, source: str, ids: Any, study: str) -> Any:
    """A top-level step proposing copies of ``ids`` of study ``source`` in ``study``."""
    return steps.light(
        propose_retraining(
            experiment_uri=experiment_uri, source_study=source, study=study, source_trial_ids=ids
        ),
        f"{study}: propose",
    ).output


def build_search_pipeline(
    rounds: int = 2,
    trials_per_round: int = 3,
    parallelism: int = 2,
    top_k: int = 1,
    profile: ClusterProfile | None = None,
) -> Callable[..., Any]:
    """Builds the search pipeline for a number of rounds and a parallelism fixed at compile time.

    Args:
        rounds: Rounds of proposals of the proxy study (unrolled: KFP v2 has no loops).
        trials_per_round: Default of the ``trials_per_round`` pipeline parameter.
        parallelism: Trials (and full trainings) that run at once.
        top_k: Default of the ``top_k`` pipeline parameter: proxy trials trained fully.
        profile: The cluster profile; ``None`` for no platform settings (local runs).

    Returns:
        The ``@dsl.pipeline`` function, ready for ``kfp.compiler`` or ``kfp.local``.

    Raises:
        ValueError: A count is below 1.
    """
    counts = {"rounds": rounds, "trials_per_round": trials_per_round}
    counts |= {"parallelism": parallelism, "top_k": top_k}
    if bad := [f"{name}={value}" for name, value in counts.items() if value < 1]:
        raise ValueError(f"pipeline counts must be at least 1, got {', '.join(bad)}")
    steps = _Steps(profile)
    trials, trainings = (
        _train_each(steps, "trial", parallelism),
        _train_each(steps, "training", parallelism),
    )
    export_each = _export_each(steps)
    default_trials, default_top_k = trials_per_round, top_k

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            f"kfnas neural architecture search: {rounds} rounds of proxy trials, full training of "
            f"the best, optional scaling and augmentation studies, final training of the winner."
        ),
    )
    def search_pipeline(
        spec_yaml: str = "demo",
        experiment_name: str = "",
        store_root: str = "",
        task_kind: str = "",
        num_classes: int = 0,
        train_data: str = "",
        validation_data: str = "",
        annotations: str = "",
        space: str = "",
        algorithm: str = "",
        trials_per_round: int = default_trials,
        proxy_train_steps: int = 0,
        proxy_batch_size: int = 0,
        full_train_steps: int = 0,
        full_batch_size: int = 0,
        top_k: int = default_top_k,
        metric: str = "",
        latency_target_ms: float = 0.0,
        scaling_trials: int = 0,
        scaling_train_steps: int = 0,
        augmentation_space: str = "",
        augmentation_trials: int = 0,
        augmentation_train_steps: int = 0,
        augmentation_evaluations: int = 0,
        model_version: str = "v1",
        overrides: list[str] = [],  # noqa: B006 - KFP reads the default from the signature
    ) -> str:
        """Neural architecture search: proxy search, full training of the best, final training.

        Empty strings and zeros keep the experiment spec's value.

        Args:
            spec_yaml: The experiment spec as YAML text (see src/kfnas/demo.yaml), or "demo" for
                the built-in demo spec.
            experiment_name: Name of the experiment in the store; the same name and spec resume
                it, so give a new name for a new search.
            store_root: Where everything is written: gs://bucket/prefix or a mounted volume path.
            task_kind: What is learned: detection, ...
            num_classes: Number of classes (detection: without the background).
            train_data: File pattern of the training TFRecords, e.g. gs://b/train-*.tfrecord.
            validation_data: File pattern of the validation TFRecords that score trials.
            annotations: COCO annotation JSON of the validation data (detection).
            space: Search space of the proxy study (kfnas spaces lists them).
            algorithm: Search algorithm (kfnas algorithms lists them); options go in overrides.
            trials_per_round: Trials proposed per round of the proxy search.
            proxy_train_steps: Training steps of each proxy trial.
            proxy_batch_size: Batch size of each proxy trial.
            full_train_steps: Training steps of the full trainings (validation and final); 0 keeps
                the spec's, or 10x the proxy steps if the spec has no validation study.
            full_batch_size: Batch size of the full trainings.
            top_k: How many of the best proxy trials are trained with the full budget.
            metric: Evaluation metric the reward is built on (AP, top_1_accuracy, ...).
            latency_target_ms: Target latency in ms of the MnasNet-style reward constraint.
            scaling_trials: Scaling study after validation (SpineNet spaces only): this many
                points of spinenet_scaling (432 in all, grid search) trained on the best
                validated architecture with the full budget; 0 switches it off.
            scaling_train_steps: Training steps of each scaling trial; 0: the full training's.
            augmentation_space: Augmentation study's space (randaugment_detection,
                autoaugment_segmentation, ...); empty: randaugment for the task.
            augmentation_trials: Augmentation-policy study after scaling: this many policies
                trained on the best architecture so far (scaled, if scaling ran); 0 switches it
                off.
            augmentation_train_steps: Training steps of each augmentation trial; 0: the full
                training's (augmentation trials train to the end, no proxy).
            augmentation_evaluations: Evaluations per augmentation trial, which reports the best;
                0: 3.
            model_version: Folder the final model is exported to, under the experiment's
                export/ in the store; an existing export of this version is kept.
            overrides: More spec changes as a JSON list of "dotted.key=value" strings, e.g.
                ["task.options.learning_rate=0.05"]; applied last.

        Returns:
            The experiment URI.
        """
        init = steps.light(
            init_experiment(
                spec_yaml=spec_yaml,
                overrides=overrides,
                experiment_name=experiment_name,
                store_root=store_root,
                task_kind=task_kind,
                num_classes=num_classes,
                train_data=train_data,
                validation_data=validation_data,
                annotations=annotations,
                space=space,
                algorithm=algorithm,
                rounds=rounds,
                trials_per_round=trials_per_round,
                proxy_train_steps=proxy_train_steps,
                proxy_batch_size=proxy_batch_size,
                full_train_steps=full_train_steps,
                full_batch_size=full_batch_size,
                metric=metric,
                latency_target_ms=latency_target_ms,
                scaling_trials=scaling_trials,
                scaling_train_steps=scaling_train_steps,
                augmentation_space=augmentation_space,
                augmentation_trials=augmentation_trials,
                augmentation_train_steps=augmentation_train_steps,
                augmentation_evaluations=augmentation_evaluations,
            ),
            "init experiment",
        )
        uri = init.output
        previous = init
        for r in range(1, rounds + 1):
            # Each round proposes after every trial of the round before: it learns from them.
            proposed = steps.light(
                propose_trials(experiment_uri=uri, study=PROXY, round_index=r),
                f"round {r}: propose",
            ).after(previous)
            previous = steps.group(
                trials(experiment_uri=uri, study=PROXY, trial_ids=proposed.output),
                f"round {r}: trials",
            )
        top = steps.light(
            select_top(experiment_uri=uri, study=PROXY, k=top_k), "select top k"
        ).after(previous)
        validation_ids = _retrain(steps, uri, PROXY, top.output, VALIDATION)
        validation = steps.group(
            trainings(experiment_uri=uri, study=VALIDATION, trial_ids=validation_ids), "validation"
        )
        winner = _refine_winner(steps, trainings, uri, validation)
        steps.light(report(experiment_uri=uri), "report").after(winner)
        final_ids = _retrain(
            steps, uri, winner.outputs["study"], winner.outputs["trial_ids"], FINAL
        )
        final = steps.group(
            trainings(experiment_uri=uri, study=FINAL, trial_ids=final_ids), "final training"
        )
        steps.group(
            export_each(
                experiment_uri=uri, study=FINAL, trial_ids=final_ids, version=model_version
            ),
            "export",
        ).after(final)
        return uri

    return search_pipeline
