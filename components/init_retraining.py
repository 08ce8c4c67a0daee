"""The ``init_retraining`` step: plan the retraining of an exported model on new data.

It reads the handoff, checks the new data with the model's task (a class id the model does not
know fails the step before any training) and writes the one trial of the experiment's
``retraining`` study; its outputs name that trial for ``run_trial`` and ``publish_if_not_worse``.
To pass more, add it to the stage's return value and to the outputs below.
"""

from typing import NamedTuple

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def init_retraining(
    handoff_uri: str,
    train_data: str,
    validation_data: str = "",
    annotations: str = "",
    full_train_steps: int = 0,
    full_batch_size: int = 0,
    new_version: str = "",
    run_id: str = "",
) -> NamedTuple("Retraining", experiment_uri=str, study=str, trial_id=int, version=str):
    """Plans (or resumes) the retraining trial; returns where it is and the version it makes."""
    from typing import NamedTuple

    from kfnas import stages

    out = stages.init_retraining(
        handoff_uri, train_data, validation_data, annotations, int(full_train_steps),
        int(full_batch_size), new_version, run_id,
    )  # fmt: skip
    return NamedTuple("Retraining", experiment_uri=str, study=str, trial_id=int, version=str)(
        out["experiment_uri"], out["study"], out["trial_id"], out["version"]
    )
