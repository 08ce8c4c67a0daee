"""The retraining pipeline: retrain an exported model on new data, publish it if not worse.

``build_retraining_pipeline(profile)`` returns the ``@dsl.pipeline`` function; its DAG is::

    init retraining  [init_retraining: read the handoff, check the new data, plan one trial]
      -> retraining  [run_trial: the handoff's architecture, scaling and augmentation policy,
                      full-training budget, new data; trains and evaluates]           (training)
      -> retraining: measure [measure_trials: its latency on the latency target device, and
                      its result.json with the reward]                                 (latency)
      -> publish if not worse [publish_if_not_worse: export it as the new version and move
                      export/latest if score >= previous score - tolerance; else keep the
                      previous version and record why in retraining/<version>.json]

The trial belongs to the ``retraining`` study of the experiment the handoff came from (see
``kfnas.stages.retraining``). It is measured like the search's trials, on the profile's ``latency``
section, after its training has ended; the publish step reads the result the measurement wrote. A
trial that fails is recorded by ``run_trial`` (or by its measurement); the publish step then fails
the run with the trial's error, and nothing is published. A rejection is not a failure: the
run succeeds, its output ``status`` is ``rejected`` and the ``metrics`` artifact of the publish
step shows both scores. ``kfnas schedule`` runs this pipeline on a cron schedule
(``pipelines/schedule.py``); leave ``new_version`` empty there, so each run gets a dated version.

Steps are configured like the search pipeline's (``pipelines/steps.py``: display names, caching
off, the cluster profile's settings by kind). To add a step (e.g. a check of the new data's
statistics): write its stage and component, and call it below through ``steps.light``,
``steps.export``, ``steps.latency`` or ``steps.training``.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature's types at runtime.
from collections.abc import Callable
from typing import Any

from kfp import dsl

from kfnas.components import init_retraining, measure_trials, publish_if_not_worse
from kfnas.components._image import IMAGE
from kfnas.pipelines.profiles import ClusterProfile, serving_argument
from kfnas.pipelines.steps import Steps

PIPELINE_NAME = "kfnas-retraining"


def build_retraining_pipeline(profile: ClusterProfile | None = None) -> Callable[..., Any]:
    """Builds the retraining pipeline.

    Args:
        profile: The cluster profile (the training step gets its ``training`` settings, the
            measurement its ``latency`` ones, the publish step its ``export`` ones and, for the
            KServe manifest of what it publishes, the ``serving`` section, the others their
            ``light`` ones); ``None`` for no platform settings (local runs).

    Returns:
        The ``@dsl.pipeline`` function, ready for ``kfp.compiler`` or ``kfp.local``.
    """
    steps = Steps(profile)
    serving = serving_argument(profile)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "kfnas retraining: an exported model's architecture, scaling and augmentation policy "
            "trained on new data with the full budget, published only if not worse."
        ),
    )
    def retraining_pipeline(
        handoff_uri: str,
        train_data: str,
        validation_data: str = "",
        annotations: str = "",
        full_train_steps: int = 0,
        full_batch_size: int = 0,
        tolerance: float = 0.0,
        new_version: str = "",
    ) -> str:
        """Retrains an exported model on new data and publishes it only if it is not worse.

        Args:
            handoff_uri: The model to retrain: <store>/<experiment>/export/latest (the current
                version), an export version folder, or its handoff.json.
            train_data: File pattern of the new training TFRecords, e.g.
                gs://b/new/train-*.tfrecord.
            validation_data: File pattern of the new validation TFRecords that score the
                retrained model; empty keeps the experiment's (and its annotations).
            annotations: COCO annotation JSON of the new validation data (detection).
            full_train_steps: Training steps; 0 keeps the final training's.
            full_batch_size: Batch size; 0 keeps the final training's.
            tolerance: How much lower than the previous version's score (same metric) the new
                one may be and still be published; 0: at least as good.
            new_version: Export folder of the new version; empty: the UTC date and time of the
                run (what a schedule needs), e.g. 20260131-030000.

        Returns:
            published or rejected.
        """
        init = steps.light(
            init_retraining(
                handoff_uri=handoff_uri,
                train_data=train_data,
                validation_data=validation_data,
                annotations=annotations,
                full_train_steps=full_train_steps,
                full_batch_size=full_batch_size,
                new_version=new_version,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "init retraining",
        )
        trial = steps.full_training(
            "retraining",
            experiment_uri=init.outputs["experiment_uri"],
            study=init.outputs["study"],
            trial_id=init.outputs["trial_id"],
        )
        measure = steps.latency(
            measure_trials(
                experiment_uri=init.outputs["experiment_uri"],
                study=init.outputs["study"],
                # A list around a task output: KFP fills the id in when the step starts.
                trial_ids=[init.outputs["trial_id"]],
            ),
            "retraining: measure",
        ).after(trial)
        publish = steps.export(
            publish_if_not_worse(
                experiment_uri=init.outputs["experiment_uri"],
                study=init.outputs["study"],
                trial_id=init.outputs["trial_id"],
                previous_handoff_uri=handoff_uri,
                new_version=init.outputs["version"],
                tolerance=tolerance,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                image=IMAGE,
                serving=serving,
            ),
            "publish if not worse",
        ).after(measure)
        return publish.outputs["status"]

    return retraining_pipeline
