"""The proxy-task variance pipeline: does one architecture score alike when trained again?

``build_variance_pipeline(parallelism, profile)`` returns the ``@dsl.pipeline`` function; its DAG
is::

    init variance   [init_variance: the search spec's proxy setting, one architecture, N repeats]
      -> repeats    [search_study: the controller trains the repeats, `parallelism` at a time, as
                     the proxy search's trials (the profile's `trial` section)]           (light)
      -> variance report [variance_report: coefficient of variation of the final metric and the
                     smoothness of the curves against their thresholds; HTML in the KFP UI]

Run it before a long search to check that a proxy task ranks reliably: a coefficient of variation
above 0.4 or a smoothness above 10 says its scores are too noisy (``kfnas.search.proxy_stats``).
``kfnas proxy variance`` runs it locally; ``kfnas compile --pipeline variance`` compiles it with a
cluster profile.

To add the other proxy-task tools (model selection, proxy-task search): build their pipelines here
the same way, from their stages in ``kfnas.stages.proxy``.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature's types at runtime.
import json
from collections.abc import Callable
from typing import Any

from kfp import dsl

from kfnas.components import init_variance, search_study, variance_report
from kfnas.pipelines.profiles import ClusterProfile
from kfnas.pipelines.search import controller_launch_config
from kfnas.pipelines.steps import Steps
from kfnas.stages.proxy import VARIANCE

VARIANCE_PIPELINE_NAME = "kfnas-proxy-variance"


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
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    steps = Steps(profile)
    launch_config = json.dumps(controller_launch_config(profile), sort_keys=True)
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
