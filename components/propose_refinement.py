"""The ``propose_refinement`` step: the round of an optional scaling or augmentation study."""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def propose_refinement(experiment_uri: str, study: str) -> list[int]:
    """Proposes (or resumes) the study's trials; none when the run has no such study."""
    from kfnas import stages

    return stages.propose_refinement(experiment_uri, study)
