"""The ``select_winner`` step: the trial the final training retrains, and its study."""

from typing import NamedTuple

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_winner(experiment_uri: str) -> NamedTuple("Winner", study=str, trial_ids=list[int]):
    """The best trial of the last study before final training that completed one."""
    from typing import NamedTuple

    from kfnas import stages

    study, trial_ids = stages.select_winner(experiment_uri)
    return NamedTuple("Winner", study=str, trial_ids=list[int])(study, trial_ids)
