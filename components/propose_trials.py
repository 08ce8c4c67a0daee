"""The ``propose_trials`` step: one round of a study's proposals, written as ``trial.json``."""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def propose_trials(experiment_uri: str, study: str, round_index: int) -> list[int]:
    """Proposes (or resumes) the trials of one round; returns their ids."""
    from kfnas import stages

    return stages.propose_trials(experiment_uri, study, round_index)
