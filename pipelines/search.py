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
fails for one bad architecture. KFP caching is off for every step (``pipelines/steps.py``).
Brackets are sub-pipelines holding one loop over one component each (``_train_each``).

A ``ClusterProfile`` (``pipelines/profiles.py``) gives each step its resources, by kind
(``pipelines/steps.py``): ``trial`` for the proxy trials, ``training`` for the full trainings,
``light`` for everything else. Without a profile the pipeline carries no platform settings (what
``kfp.local`` runs).

The pipeline's parameters are the run settings declared in ``kfnas.config.settings``
(``ExperimentSettings``: descriptions and defaults) plus the four of ``_OWN_PARAMETERS`` below; its
docstring and its call of ``init_experiment`` are built from those declarations, and a test checks
the signature written out below against them.

To add a step: write its stage and component, call the component in the part of the DAG it
belongs to (``_proxy_search``, ``_validate``, ``_refine_winner``, ``_finish``) through
``steps.light`` (or ``steps.trial``/``steps.training``), wrapping it in a one-component
sub-pipeline like ``_train_each`` when it runs per trial, and order it with ``.after`` where it
reads what an earlier step wrote without taking its output.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature's types at runtime.
import dataclasses
from collections.abc import Callable
from typing import Any

from kfp import dsl

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
from kfnas.config.settings import run_parameters
from kfnas.config.studies import AUGMENTATION, FINAL, PROXY, SCALING, VALIDATION
from kfnas.pipelines.profiles import ClusterProfile
from kfnas.pipelines.steps import Steps

PIPELINE_NAME = "kfnas-search"

#: The pipeline's parameters that are not run settings, with their descriptions.
_OWN_PARAMETERS = {
    "spec_yaml": 'The experiment spec as YAML text (see src/kfnas/demo.yaml), or "demo" for\n'
    "the built-in demo spec.",
    "top_k": "How many of the best proxy trials are trained with the full budget.",
    "model_version": "Folder the final model is exported to, under the experiment's\n"
    "export/ in the store; an existing export of this version is kept.",
    "overrides": 'More spec changes as a JSON list of "dotted.key=value" strings, e.g.\n'
    '["task.options.learning_rate=0.05"]; applied last.',
}


def parameter_descriptions() -> dict[str, str]:
    """Every run parameter's description: the run settings' and the pipeline's own."""
    settings = {field.name: field.metadata["help"] for field in run_parameters()}
    return {**settings, **_OWN_PARAMETERS}


def _docstring() -> str:
    """The search pipeline's docstring (KFP reads the parameter descriptions from it)."""
    args = "".join(
        f"    {name}: " + text.replace("\n", "\n        ") + "\n"
        for name, text in parameter_descriptions().items()
    )
    return (
        "Neural architecture search: proxy search, full training of the best, final training.\n\n"
        "Empty strings and zeros keep the experiment spec's value.\n\n"
        f"Args:\n{args}\nReturns:\n    The experiment URI.\n"
    )


def _train_each(steps: Steps, kind: str, parallelism: int) -> Callable[..., Any]:
    """A sub-pipeline that runs ``run_trial`` for each of a list of trials, as ``kind`` steps.

    Every loop is such a sub-pipeline, holding one loop over one component, because of two KFP
    2.17 bugs: ``kfp.local`` replaces, inside a ``ParallelFor``, every input that comes from
    another task's output by the loop item (so loops read the experiment URI from their
    sub-pipeline's inputs), and the compiler mixes up the Kubernetes settings of two
    sub-pipelines' executors of the same component unless each sub-pipeline has a single executor
    (``tests/pipelines/test_pipeline_compile.py`` checks every step's settings).
    """
    configure = steps.trial if kind == "trial" else steps.training

    @dsl.pipeline(name=f"{kind}-loop")
    def train_each(experiment_uri: str, study: str, trial_ids: list[int]):
        with dsl.ParallelFor(trial_ids, parallelism=parallelism) as trial_id:
            configure(
                run_trial(experiment_uri=experiment_uri, study=study, trial_id=trial_id),
                "trial" if kind == "trial" else "full training",
            )

    return train_each


def _export_each(steps: Steps) -> Callable[..., Any]:
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


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What every part of the DAG uses: the step configuration and the sub-pipelines."""

    steps: Steps
    trials: Callable[..., Any]
    trainings: Callable[..., Any]
    export_each: Callable[..., Any]

    @classmethod
    def build(cls, profile: ClusterProfile | None, parallelism: int) -> "_Parts":
        steps = Steps(profile)
        return cls(
            steps,
            _train_each(steps, "trial", parallelism),
            _train_each(steps, "training", parallelism),
            _export_each(steps),
        )


def _retrain(parts: _Parts, experiment_uri: Any, source: str, ids: Any, study: str) -> Any:
    """A top-level step proposing copies of ``ids`` of study ``source`` in ``study``."""
    return parts.steps.light(
        propose_retraining(
            experiment_uri=experiment_uri, source_study=source, study=study, source_trial_ids=ids
        ),
        f"{study}: propose",
    ).output


def _proxy_search(parts: _Parts, uri: Any, rounds: int, after: Any) -> Any:
    """The proxy study's rounds; each proposes after every trial of the round before.

    Returns:
        The last round's trials (a sub-pipeline task).
    """
    previous = after
    for r in range(1, rounds + 1):
        proposed = parts.steps.light(
            propose_trials(experiment_uri=uri, study=PROXY, round_index=r),
            f"round {r}: propose",
        ).after(previous)
        previous = parts.steps.group(
            parts.trials(experiment_uri=uri, study=PROXY, trial_ids=proposed.output),
            f"round {r}: trials",
        )
    return previous


def _validate(parts: _Parts, uri: Any, top_k: Any, after: Any) -> Any:
    """Selects the top k proxy trials and trains copies of them with the full budget.

    Returns:
        The validation trainings (a sub-pipeline task).
    """
    top = parts.steps.light(
        select_top(experiment_uri=uri, study=PROXY, k=top_k), "select top k"
    ).after(after)
    ids = _retrain(parts, uri, PROXY, top.output, VALIDATION)
    return parts.steps.group(
        parts.trainings(experiment_uri=uri, study=VALIDATION, trial_ids=ids), "validation"
    )


def _refine_winner(parts: _Parts, uri: Any, after: Any) -> Any:
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
        proposed = parts.steps.light(
            propose_refinement(experiment_uri=uri, study=study), f"{study}: propose"
        ).after(previous)
        previous = parts.steps.group(
            parts.trainings(experiment_uri=uri, study=study, trial_ids=proposed.output), study
        )
    return parts.steps.light(select_winner(experiment_uri=uri), "select the winner").after(previous)


def _finish(parts: _Parts, uri: Any, winner: Any, model_version: Any) -> None:
    """The report, the final training of the winner and its export."""
    parts.steps.light(report(experiment_uri=uri), "report").after(winner)
    final_ids = _retrain(parts, uri, winner.outputs["study"], winner.outputs["trial_ids"], FINAL)
    final = parts.steps.group(
        parts.trainings(experiment_uri=uri, study=FINAL, trial_ids=final_ids), "final training"
    )
    parts.steps.group(
        parts.export_each(
            experiment_uri=uri, study=FINAL, trial_ids=final_ids, version=model_version
        ),
        "export",
    ).after(final)


def _check_counts(**counts: int) -> None:
    if bad := [f"{name}={value}" for name, value in counts.items() if value < 1]:
        raise ValueError(f"pipeline counts must be at least 1, got {', '.join(bad)}")


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
    _check_counts(
        rounds=rounds, trials_per_round=trials_per_round, parallelism=parallelism, top_k=top_k
    )
    parts = _Parts.build(profile, parallelism)
    default_trials, default_top_k = trials_per_round, top_k

    # The signature KFP reads: the run settings of ``kfnas.config.settings`` (same names, types
    # and defaults; tests/config/test_settings_declaration.py checks them) and
    # ``_OWN_PARAMETERS``.
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
        arguments = locals()
        settings = {field.name: arguments[field.name] for field in run_parameters()}
        init = parts.steps.light(
            init_experiment(spec_yaml=spec_yaml, overrides=overrides, rounds=rounds, **settings),
            "init experiment",
        )
        uri = init.output
        searched = _proxy_search(parts, uri, rounds, init)
        validation = _validate(parts, uri, top_k, searched)
        winner = _refine_winner(parts, uri, validation)
        _finish(parts, uri, winner, model_version)
        return uri

    search_pipeline.__doc__ = _docstring()
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            f"kfnas neural architecture search: {rounds} rounds of proxy trials, full training of "
            f"the best, optional scaling and augmentation studies, final training of the winner."
        ),
    )(search_pipeline)
