"""The ``propose_retraining`` step: trials that train chosen architectures again, fully."""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def propose_retraining(
    experiment_uri: str, source_study: str, study: str, source_trial_ids: list[int]
) -> list[int]:
    """Writes (or resumes) one trial of ``study`` per source trial; returns their ids."""
    from kfnas import stages

    ids = [int(i) for i in source_trial_ids]  # KFP lists may carry numbers as floats.
    return stages.propose_retraining(experiment_uri, source_study, study, ids)
