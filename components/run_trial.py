"""The ``run_trial`` step: train, evaluate and measure one trial; its metrics show in the KFP UI.

A trial that fails is recorded as FAILED or INFEASIBLE and the step still succeeds, so one bad
architecture never fails the ``ParallelFor`` it runs in. The trial's metrics and reward are logged
to the ``metrics`` artifact; to show another number, log it there.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def run_trial(
    experiment_uri: str, study: str, trial_id: int, metrics: Output[Metrics]
) -> NamedTuple("Outputs", trial_id=int, status=str):
    """Runs one trial (at once if already finished); returns its id and status."""
    from kfnas import stages

    result = stages.run_trial(experiment_uri, study, int(trial_id))
    for name, value in sorted(result.metrics.items()):
        metrics.log_metric(name, value)
    if result.reward is not None:
        metrics.log_metric("reward", result.reward)
    return (result.trial_id, result.status.value)
