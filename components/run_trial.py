"""The ``run_trial`` step: train and evaluate one trial; its metrics show in the KFP UI.

It trains and evaluates only: the measurement step after it (``measure_trials``, on the cluster
profile's latency target device) measures the trained model and records its latency and reward in
the trial's ``result.json``. A trial that fails is recorded as FAILED or INFEASIBLE and the step
still succeeds, so one bad architecture never fails the ``ParallelFor`` it runs in. The trial's
evaluation metrics are logged to the ``metrics`` artifact (its reward to the measurement step's);
to show another number, log it there.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def run_trial(
    experiment_uri: str, study: str, trial_id: int, metrics: Output[Metrics]
) -> NamedTuple("Outputs", trial_id=int, status=str):
    """Trains and evaluates one trial (at once if already trained); returns its id and status.

    The status is ``TRAINED`` for a trial that trained well, else how it ended (``FAILED``, ...).
    """
    from kfnas import stages

    result = stages.run_trial(experiment_uri, study, int(trial_id), measure=False)
    for name, value in sorted(result.metrics.items()):
        metrics.log_metric(name, value)
    # Trained well (no status yet): the measurement step records the result and its reward.
    status = getattr(result, "status", None)
    return (result.trial_id, status.value if status is not None else "TRAINED")
