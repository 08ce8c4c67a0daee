"""The ``select_top`` step: the best completed trials of a study by reward."""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_top(experiment_uri: str, study: str, k: int) -> list[int]:
    """Returns the ids of the ``k`` best completed trials of ``study``, best first."""
    from kfnas import stages

    return stages.select_top(experiment_uri, study, k)
