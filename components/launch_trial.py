"""The ``launch_trial`` step: one full training as a multi-node job; its metrics in the KFP UI.

Used instead of ``run_trial`` when the cluster profile's ``training`` section spans several nodes:
this light step starts the trial as a Trainer v2 ``TrainJob`` or a ``TFJob`` (the launch config
compiled into the pipeline), follows it to its end and logs the trial's metrics to the
``metrics`` artifact, as ``run_trial`` does; the measurement step that follows records the latency
and the reward.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def launch_trial(
    experiment_uri: str,
    study: str,
    trial_id: int,
    launch_config: str,
    run_id: str,
    metrics: Output[Metrics],
) -> NamedTuple("Outputs", trial_id=int, status=str):
    """Runs one trial as a multi-node job (at once if already finished); its id and status."""
    import json

    from kfnas import stages

    result = stages.launch_trial(
        experiment_uri, study, int(trial_id), json.loads(launch_config), run_id=run_id
    )
    for name, value in sorted(result.metrics.items()):
        metrics.log_metric(name, value)
    status = getattr(result, "status", None)  # none: trained, the measurement step records it
    return (result.trial_id, status.value if status is not None else "TRAINED")
