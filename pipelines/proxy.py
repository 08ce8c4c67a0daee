"""The proxy-task design pipelines: variance of a proxy task, and the reference models.

``build_variance_pipeline(parallelism, profile)``: does one architecture score alike when trained
again? Its DAG is::

    init variance   [init_variance: the search spec's proxy setting, one architecture, N repeats]
      -> repeats    [search_study: the controller trains the repeats, `parallelism` at a time, as
                     the proxy search's trials (the profile's `trial` section)]           (light)
      -> variance report [variance_report: coefficient of variation of the final metric and the
                     smoothness of the curves against their thresholds; HTML in the KFP UI]

Run it before a long search to check that a proxy task ranks reliably: a coefficient of variation
above 0.4 or a smoothness above 10 says its scores are too noisy (``kfnas.search.proxy_stats``).
``kfnas proxy variance`` runs it locally; ``kfnas compile --pipeline variance`` compiles it with a
cluster profile.

``build_selection_pipeline(parallelism, profile)``: the reference models a proxy task is judged
against (``kfnas.stages.selection``)::

    init model selection [init_model_selection: 30 architectures of the proxy study's space]
      -> select models   [select_models: iterations toward the full-training budget, the crowding
                          rule pruning to 10 spread out in accuracy against latency; the trials
                          run as the search's trial Jobs; HTML in the KFP UI]     (controller)

``kfnas proxy select`` runs it locally; ``kfnas compile --pipeline selection`` compiles it.

``build_proxy_search_pipeline(parallelism, profile)``: which cheap setting ranks the reference
models as full training does (``kfnas.stages.proxy_search``)::

    init proxy search  [init_proxy_search: the grid's candidates, the model selection's reference
                        models, every candidate's spec and data checked before any training]
      -> search proxy tasks [search_proxy_tasks: each candidate retrains the reference models,
                        stopping once Kendall's tau reaches the target or at the time limit; the
                        trials run as the search's trial Jobs; HTML in the KFP UI] (controller)

``kfnas proxy search`` runs it locally; ``kfnas compile --pipeline proxy-search`` compiles it.

To add a tool: build its pipeline here the same way, from its stages, and name it in
``PROXY_TOOLS``.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature's types at runtime.
import json
from collections.abc import Callable
from typing import Any

from kfp import dsl

from kfnas.components import (
    init_model_selection,
    init_proxy_search,
    init_variance,
    search_proxy_tasks,
    search_study,
    select_models,
    variance_report,
)
from kfnas.pipelines.profiles import ClusterProfile
from kfnas.pipelines.search import controller_launch_config
from kfnas.pipelines.steps import Steps
from kfnas.stages.proxy import VARIANCE

VARIANCE_PIPELINE_NAME = "kfnas-proxy-variance"
SELECTION_PIPELINE_NAME = "kfnas-proxy-select"
PROXY_SEARCH_PIPELINE_NAME = "kfnas-proxy-search"


def _parts(parallelism: int, profile: ClusterProfile | None) -> tuple[Steps, str]:
    """The step configuration and the controller's launch config (JSON) of a tool's pipeline."""
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    return Steps(profile), json.dumps(controller_launch_config(profile), sort_keys=True)


def _init_then_drive(
    steps: Steps,
    init: tuple[Any, str],
    driver: tuple[Any, str],
    parallelism: Any,
    launch_config: str,
) -> Any:
    """A tool's two steps: its init (light) and the controller-kind step driving its trainings.

    Args:
        steps: The step configuration.
        init: The init task and its display name; its output is the experiment's URI.
        driver: The driving component (``experiment_uri, parallelism, launch_config, run_id``)
            and its display name.
        parallelism: The pipeline's ``parallelism`` parameter.
        launch_config: The controller's launch config (JSON).

    Returns:
        The driving step's output (the URI of its report).
    """
    started = steps.light(init[0], init[1])
    component, name = driver
    driven = steps.controller(
        component(
            experiment_uri=started.output,
            parallelism=parallelism,
            launch_config=launch_config,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        name,
    )
    return driven.outputs["Output"]


def build_variance_pipeline(
    parallelism: int = 2, profile: ClusterProfile | None = None
) -> Callable[..., Any]:
    """Builds the variance pipeline.

    Args:
        parallelism: Default of the ``parallelism`` parameter: repeats trained at once.
        profile: The cluster profile (the repeats run as the search's trial Jobs, the other
            steps on its ``light`` settings); ``None`` for local runs.

    Returns:
        The ``@dsl.pipeline`` function, ready for ``kfp.compiler`` or ``kfp.local``.

    Raises:
        ValueError: ``parallelism`` below 1.
    """
    steps, launch_config = _parts(parallelism, profile)
    default_parallelism = parallelism

    @dsl.pipeline(
        name=VARIANCE_PIPELINE_NAME,
        description=(
            "kfnas proxy-task variance: one architecture trained several times with the proxy "
            "task's setting; the coefficient of variation of its score and the smoothness of its "
            "training curves, against Vertex AI NAS's thresholds."
        ),
    )
    def variance_pipeline(
        spec_yaml: str = "demo",
        repeats: int = 5,
        architecture: str = "",
        parallelism: int = default_parallelism,
        overrides: list[str] = [],  # noqa: B006 - KFP reads the default from the signature
    ) -> str:
        """Trains one architecture ``repeats`` times with the proxy setting and reports the spread.

        Args:
            spec_yaml: The search spec whose proxy study (space, budget, data) is measured, or
                demo.
            repeats: Trainings of the one architecture (at least 2; 5 is Vertex AI NAS's).
            architecture: reference (the space's published one), random, or empty (the
                reference when the space has one, else random).
            parallelism: Repeats trained at once.
            overrides: Dotted key=value overrides of the spec, e.g.
                studies.proxy.budget.train_steps=400 or data.train=gs://b/train-*.

        Returns:
            The URI of the HTML report in the store.
        """
        init = steps.light(
            init_variance(
                spec_yaml=spec_yaml,
                overrides=overrides,
                repeats=repeats,
                architecture=architecture,
            ),
            "init variance",
        )
        trained = steps.controller(
            search_study(
                experiment_uri=init.output,
                study=VARIANCE,
                parallelism=parallelism,
                launch_config=launch_config,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "repeats",
        )
        report = steps.light(variance_report(experiment_uri=init.output), "variance report")
        return report.after(trained).outputs["Output"]

    return variance_pipeline


def build_selection_pipeline(
    parallelism: int = 2, profile: ClusterProfile | None = None
) -> Callable[..., Any]:
    """Builds the model-selection pipeline.

    Args:
        parallelism: Default of the ``parallelism`` parameter: models trained at once.
        profile: The cluster profile (the models run as the search's trial Jobs, the step that
            drives them as a controller); ``None`` for local runs.

    Returns:
        The ``@dsl.pipeline`` function, ready for ``kfp.compiler`` or ``kfp.local``.

    Raises:
        ValueError: ``parallelism`` below 1.
    """
    steps, launch_config = _parts(parallelism, profile)
    default_parallelism = parallelism

    @dsl.pipeline(
        name=SELECTION_PIPELINE_NAME,
        description=(
            "kfnas proxy-task model selection: architectures of the search space trained toward "
            "the full-training budget in iterations, pruned to a set spread out in accuracy "
            "against latency; their full-training scores judge proxy tasks."
        ),
    )
    def selection_pipeline(
        spec_yaml: str = "demo",
        models: int = 30,
        final_models: int = 10,
        remove_per_iteration: int = 5,
        parallelism: int = default_parallelism,
        overrides: list[str] = [],  # noqa: B006 - KFP reads the default from the signature
    ) -> str:
        """Selects reference models of the proxy study's space with their full-training scores.

        Args:
            spec_yaml: The search spec (its proxy study's space, its validation study's
                full-training budget, its data), or demo.
            models: Architectures drawn at the start (30 in Vertex AI NAS).
            final_models: Models kept and trained to the full budget (10; at least 5 for the
                proxy-task search's rank correlation).
            remove_per_iteration: Models removed after each iteration at most (5).
            parallelism: Models trained at once.
            overrides: Dotted key=value overrides of the spec, e.g.
                studies.validation.budget.train_steps=3000.

        Returns:
            The URI of the model-selection report (JSON) in the store.
        """
        init = init_model_selection(
            spec_yaml=spec_yaml,
            overrides=overrides,
            models=models,
            final_models=final_models,
            remove_per_iteration=remove_per_iteration,
        )
        return _init_then_drive(
            steps,
            (init, "init model selection"),
            (select_models, "select models"),
            parallelism,
            launch_config,
        )

    return selection_pipeline


def build_proxy_search_pipeline(
    parallelism: int = 2, profile: ClusterProfile | None = None
) -> Callable[..., Any]:
    """Builds the proxy-task search pipeline.

    Args:
        parallelism: Default of the ``parallelism`` parameter: models trained at once.
        profile: The cluster profile (the candidates' trainings run as the search's trial Jobs,
            the step that drives them as a controller); ``None`` for local runs.

    Returns:
        The ``@dsl.pipeline`` function, ready for ``kfp.compiler`` or ``kfp.local``.

    Raises:
        ValueError: ``parallelism`` below 1.
    """
    steps, launch_config = _parts(parallelism, profile)
    default_parallelism = parallelism

    @dsl.pipeline(
        name=PROXY_SEARCH_PIPELINE_NAME,
        description=(
            "kfnas proxy-task search: the reference models of a model selection retrained under "
            "each candidate proxy setting of a grid, following Kendall's rank correlation with "
            "their full-training scores; the cheapest candidate that meets the target."
        ),
    )
    def proxy_search_pipeline(
        grid_yaml: str,
        spec_yaml: str = "demo",
        selection_uri: str = "",
        target_correlation: float = 0.65,
        target_accuracy: float = -1.0,
        time_limit_hours: float = 3.0,
        stop_if_slower: bool = True,
        latency_correlation: float = 0.65,
        evaluations: int = 5,
        parallelism: int = default_parallelism,
        overrides: list[str] = [],  # noqa: B006 - KFP reads the default from the signature
    ) -> str:
        """Finds the cheapest proxy setting that ranks the reference models as full training.

        Args:
            grid_yaml: The candidates: spec keys mapped to lists of values (every combination),
                e.g. {task.image_size: [64, 96], studies.proxy.budget.train_steps: [200, 400]},
                or a list of candidates, e.g. [{name: small, task.image_size: 64}].
            spec_yaml: The search spec whose proxy study is varied, or demo.
            selection_uri: The model-selection experiment (kfnas-proxy-select); empty: the
                spec's <name>-selection in its store.
            target_correlation: Kendall's tau with the full-training scores that makes a proxy
                good (0.65).
            target_accuracy: A median proxy score that makes it good too; below 0: not used.
            time_limit_hours: Training hours after which a candidate gives up (3).
            stop_if_slower: Stop a candidate once it needs more time than the best so far.
            latency_correlation: The latency tau a good candidate needs when latencies are
                measured (-1: any).
            evaluations: Evaluations of each training (the points the correlation is followed
                at).
            parallelism: Models trained at once.
            overrides: Dotted key=value overrides of the spec, before each candidate's.

        Returns:
            The URI of the proxy-task search report (JSON) in the store.
        """
        init = init_proxy_search(
            spec_yaml=spec_yaml,
            grid_yaml=grid_yaml,
            overrides=overrides,
            selection_uri=selection_uri,
            target_correlation=target_correlation,
            target_accuracy=target_accuracy,
            time_limit_hours=time_limit_hours,
            stop_if_slower=stop_if_slower,
            latency_correlation=latency_correlation,
            evaluations=evaluations,
        )
        return _init_then_drive(
            steps,
            (init, "init proxy search"),
            (search_proxy_tasks, "search proxy tasks"),
            parallelism,
            launch_config,
        )

    return proxy_search_pipeline


#: The proxy-task tools' pipelines by name: ``(parallelism, profile) -> pipeline``.
PROXY_TOOLS: dict[str, Callable[..., Callable[..., Any]]] = {
    "variance": build_variance_pipeline,
    "selection": build_selection_pipeline,
    "proxy-search": build_proxy_search_pipeline,
}
