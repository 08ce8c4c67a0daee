"""The search pipeline: proxy search, validation, scaling and augmentation, final training.

``build_search_pipeline(rounds, trials_per_round, parallelism, top_k, profile)`` returns the
``@dsl.pipeline`` function; its DAG is::

    init experiment
      -> proxy search [search_study: the controller keeps `parallelism` trial slots busy]  (light)
      -> select top k -> validation: propose (copies of the top k with the full budget)
      -> validation [ParallelFor(ids, parallelism): run_trial, or launch_trial]      (training)
      -> validation: measure [measure_trials(ids): one model at a time]               (latency)
      -> scaling search [search_study] -> augmentation search [search_study]  (optional; light)
      -> select the winner
      -> final: propose (the winner, with its scaling and policy) -> final training   (training)
      -> final: measure [measure_trials(ids)]                                         (latency)
      -> export [export_model: SavedModel in the store's export/<model_version>]
      -> report (every study, the final one included, and the exported model's lineage)

Each searched study (``proxy``, ``scaling``, ``augmentation``) is one step, the search controller
(``kfnas.stages.controller``): it proposes through the stateless controller whenever trial slots
free up and runs each trial as a job of its launcher: a Kubernetes Job with the profile's
``trial`` (proxy) or ``training`` (refinements) settings when compiled with a profile, a local
subprocess without one (``kfp.local``, ``kfnas run``). So the compiled pipeline has the same tasks
and size for 2 rounds or 2,000 (``benchmarks/pipeline_size.py``), and no slot waits for a round's
slowest trial (``benchmarks/slot_utilization.py``). The validation and final trainings (top k, a
handful) stay KFP tasks, so the models that matter show in the KFP UI: ``run_trial`` in a pod with
the profile's ``training`` settings, or, when that section spans several nodes (``workers``), a
light ``launch_trial`` step that runs the trial as a Trainer v2 ``TrainJob`` or a ``TFJob``.

Trainings only train and evaluate; latency is measured on the profile's ``latency`` section (the
device the model is deployed on, which the reward's latency constraint refers to), one model at a
time. The validation and final trainings are measured by a top-level ``measure_trials`` step after
their group (``_measure``), which writes each trial's ``result.json`` (latency, FLOPs, reward), so
whatever reads those results (the scaling search and ``select_winner``; the export) runs after it;
being outside the loops, it runs after every training of its group has ended, under ``kfp.local``
too, and never shares the device with a training. The search controller measures its own trials
with measurement jobs of its launcher (Kubernetes Jobs on the ``latency`` section).

Every count is a pipeline parameter (``rounds``, ``trials_per_round``, ``parallelism``, ``top_k``);
the compile-time values are their defaults, and ``parallelism`` also bounds the ``ParallelFor`` of
the validation and final trainings (KFP fixes that one when compiling). Steps exchange only the
experiment URI and trial ids: the store is the single source of truth, every stage resumes, and a
failed trial is recorded (the step succeeds). KFP caching is off for every step
(``pipelines/steps.py``). Brackets are sub-pipelines holding one loop over one component each
(``_train_each``).

A ``ClusterProfile`` (``pipelines/profiles.py``) gives each step its resources, by kind
(``pipelines/steps.py``): ``trial`` for the proxy trials' Jobs, ``training`` for the full trainings,
``latency`` for the measurement steps and Jobs, ``export`` for the export of the final model (it
loads the largest model of the run), ``light`` for everything else (the controllers too, without
the light steps' timeout). Without a profile the pipeline carries no platform settings (what
``kfp.local`` runs). The profile's ``serving`` section reaches the export step as its ``serving``
argument (JSON compiled in): the KServe manifest of the export asks for its resources.

The pipeline's parameters are the run settings declared in ``kfnas.config.settings``
(``ExperimentSettings``: descriptions and defaults) plus the ones of ``_OWN_PARAMETERS`` below; its
docstring and its call of ``init_experiment`` are built from those declarations, and a test checks
the signature written out below against them.

To add a step: write its stage and component, call the component in the part of the DAG it
belongs to (``_validate``, ``_refine_winner``, ``_finish``) through ``steps.light`` (or
``steps.trial``/``steps.training``/``steps.latency``/``steps.export``/``steps.controller``),
wrapping it in a one-component sub-pipeline like ``_train_each`` when it runs per trial, and
order it with ``.after`` where it reads what an earlier step wrote without taking its output (a
step reading the results of validation or final trials: after ``_measure``'s step).
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature's types at runtime.
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from kfp import dsl

from kfnas.components import (
    export_model,
    init_experiment,
    measure_trials,
    propose_retraining,
    report,
    search_study,
    select_top,
    select_winner,
)
from kfnas.components._image import IMAGE
from kfnas.config.settings import run_parameters
from kfnas.config.studies import AUGMENTATION, FINAL, PROXY, SCALING, VALIDATION
from kfnas.pipelines.profiles import ClusterProfile, serving_argument
from kfnas.pipelines.steps import Steps

PIPELINE_NAME = "kfnas-search"

#: The pipeline's parameters that are not run settings, with their descriptions.
_OWN_PARAMETERS = {
    "spec_yaml": 'The experiment spec as YAML text (see src/kfnas/demo.yaml), or "demo" for\n'
    "the built-in demo spec.",
    "parallelism": "Trials that run at once (trial slots the search keeps busy); the\n"
    "validation and final trainings run at most the compiled parallelism at once.",
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


def _train_each(steps: Steps, parallelism: int) -> Callable[..., Any]:
    """A sub-pipeline that runs ``run_trial`` for each of a list of trials, as full trainings.

    Every loop is such a sub-pipeline, holding one loop over one component, because of two KFP
    2.17 bugs: ``kfp.local`` replaces, inside a ``ParallelFor``, every input that comes from
    another task's output by the loop item (so loops read the experiment URI from their
    sub-pipeline's inputs), and the compiler mixes up the Kubernetes settings of two
    sub-pipelines' executors of the same component unless each sub-pipeline has a single executor
    (``tests/pipelines/test_pipeline_compile.py`` checks every step's settings).
    """

    @dsl.pipeline(name="training-loop")
    def train_each(experiment_uri: str, study: str, trial_ids: list[int]):
        with dsl.ParallelFor(trial_ids, parallelism=parallelism) as trial_id:
            steps.full_training(
                "full training", experiment_uri=experiment_uri, study=study, trial_id=trial_id
            )

    return train_each


def _export_each(steps: Steps, serving: str) -> Callable[..., Any]:
    """A sub-pipeline that exports each of a list of trials (the search exports one).

    ``serving`` is the profile's serving section as JSON (``serving_argument``; empty without a
    profile), compiled in: the KServe manifest of each export asks for its resources.
    """

    @dsl.pipeline(name="export-loop")
    def export_each(experiment_uri: str, study: str, trial_ids: list[int], version: str):
        with dsl.ParallelFor(trial_ids, parallelism=1) as trial_id:
            steps.export(
                export_model(
                    experiment_uri=experiment_uri,
                    study=study,
                    trial_id=trial_id,
                    version=version,
                    # Recorded in handoff.json: the KFP run, and the image compiled in (the
                    # component cannot default to it: its source runs in the container).
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    image=IMAGE,
                    serving=serving,
                ),
                "export",
            )

    return export_each


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What every part of the DAG uses: the step configuration and the sub-pipelines."""

    steps: Steps
    trainings: Callable[..., Any]
    export_each: Callable[..., Any]
    launch_config: str

    @classmethod
    def build(cls, profile: ClusterProfile | None, parallelism: int) -> "_Parts":
        steps = Steps(profile)
        return cls(
            steps,
            _train_each(steps, parallelism),
            _export_each(steps, serving_argument(profile)),
            json.dumps(controller_launch_config(profile), sort_keys=True),
        )


def controller_launch_config(profile: ClusterProfile | None) -> dict[str, Any]:
    """How the search controllers run trials: local subprocesses, or Jobs from the profile."""
    if profile is None:
        return {"kind": "local"}
    from kfnas.pipelines.trial_pods import launch_config  # the Kubernetes settings of a profile

    return launch_config(profile, IMAGE)


def _search(parts: _Parts, uri: Any, study: str, parallelism: Any, after: Any) -> Any:
    """The search controller step of one study (a study the run switched off returns at once)."""
    return parts.steps.controller(
        search_study(
            experiment_uri=uri,
            study=study,
            parallelism=parallelism,
            launch_config=parts.launch_config,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        f"{study} search",
    ).after(after)


def _retrain(parts: _Parts, experiment_uri: Any, source: str, ids: Any, study: str) -> Any:
    """A top-level step proposing copies of ``ids`` of study ``source`` in ``study``."""
    return parts.steps.light(
        propose_retraining(
            experiment_uri=experiment_uri, source_study=source, study=study, source_trial_ids=ids
        ),
        f"{study}: propose",
    ).output


def _measure(parts: _Parts, uri: Any, study: str, ids: Any, trainings: Any) -> Any:
    """The top-level step measuring the trials ``ids`` of ``study`` once ``trainings`` ended.

    It runs on the latency section, one model at a time, and writes the trials' results: a step
    that reads them goes after it.
    """
    return parts.steps.latency(
        measure_trials(experiment_uri=uri, study=study, trial_ids=ids), f"{study}: measure"
    ).after(trainings)


def _validate(parts: _Parts, uri: Any, top_k: Any, after: Any) -> Any:
    """Selects the top k proxy trials, trains copies of them with the full budget, measures them.

    Returns:
        The validation's measurement step (the validation results are written once it ends).
    """
    top = parts.steps.light(
        select_top(experiment_uri=uri, study=PROXY, k=top_k), "select top k"
    ).after(after)
    ids = _retrain(parts, uri, PROXY, top.output, VALIDATION)
    trainings = parts.steps.group(
        parts.trainings(experiment_uri=uri, study=VALIDATION, trial_ids=ids), "validation"
    )
    return _measure(parts, uri, VALIDATION, ids, trainings)


def _refine_winner(parts: _Parts, uri: Any, parallelism: Any, after: Any) -> Any:
    """The optional scaling and augmentation studies, then the choice of the final trial.

    Each study is searched by its controller (which returns at once when the run switched it
    off), its trials run as full trainings: ``scaling`` over the best validated architecture,
    ``augmentation`` over the best trial so far. ``select_winner`` then names the study and trial
    the final training copies, with their scaling and policy.

    Returns:
        The ``select_winner`` task (outputs ``study`` and ``trial_ids``).
    """
    previous = after
    for study in (SCALING, AUGMENTATION):
        previous = _search(parts, uri, study, parallelism, previous)
    return parts.steps.light(select_winner(experiment_uri=uri), "select the winner").after(previous)


def _finish(parts: _Parts, uri: Any, winner: Any, model_version: Any) -> None:
    """The final training of the winner, its measurement, its export, then the report.

    The report comes last so that it covers every study, the final one included, and the lineage
    of the exported model.
    """
    final_ids = _retrain(parts, uri, winner.outputs["study"], winner.outputs["trial_ids"], FINAL)
    final = parts.steps.group(
        parts.trainings(experiment_uri=uri, study=FINAL, trial_ids=final_ids), "final training"
    )
    measured = _measure(parts, uri, FINAL, final_ids, final)
    exported = parts.steps.group(
        parts.export_each(
            experiment_uri=uri, study=FINAL, trial_ids=final_ids, version=model_version
        ),
        "export",
    ).after(measured)
    parts.steps.light(report(experiment_uri=uri), "report").after(exported)


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
    """Builds the search pipeline; its tasks and size do not depend on the counts.

    Args:
        rounds: Default of the ``rounds`` pipeline parameter.
        trials_per_round: Default of the ``trials_per_round`` pipeline parameter.
        parallelism: Default of the ``parallelism`` pipeline parameter, and the most validation
            and final trainings that run at once.
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
    default_rounds, default_trials, default_top_k = rounds, trials_per_round, top_k
    default_parallelism = parallelism

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
        rounds: int = default_rounds,
        trials_per_round: int = default_trials,
        proxy_train_steps: int = 0,
        proxy_batch_size: int = 0,
        full_train_steps: int = 0,
        full_batch_size: int = 0,
        parallelism: int = default_parallelism,
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
            init_experiment(spec_yaml=spec_yaml, overrides=overrides, **settings),
            "init experiment",
        )
        uri = init.output
        searched = _search(parts, uri, PROXY, parallelism, init)
        measured = _validate(parts, uri, top_k, searched)
        winner = _refine_winner(parts, uri, parallelism, measured)
        _finish(parts, uri, winner, model_version)
        return uri

    search_pipeline.__doc__ = _docstring()
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            f"kfnas neural architecture search: {rounds} rounds of {trials_per_round} proxy trials "
            f"by default, {parallelism} at a time (one step keeps the trial slots busy), full "
            f"training of the best, optional scaling and augmentation searches, final training "
            f"of the winner."
        ),
    )(search_pipeline)
