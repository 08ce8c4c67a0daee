"""The ``search_study`` step: the search controller of one study; its summary in the KFP UI.

It runs as long as its study (see ``kfnas.stages.controller``): it keeps ``parallelism`` trial
slots busy, running each trial as a job of the launcher ``launch_config`` names (compiled into the
pipeline: local subprocesses, or Kubernetes Jobs from the cluster profile). The summary (trials
completed and failed, best reward, slot utilization, proposal time) is logged to ``metrics``.
"""

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def search_study(
    experiment_uri: str,
    study: str,
    parallelism: int,
    launch_config: str,
    run_id: str,
    metrics: Output[Metrics],
) -> str:
    """Searches one study until its budget is spent or it is stopped; returns the experiment URI."""
    import json

    from kfnas import stages

    state = stages.search_study(
        experiment_uri, study, int(parallelism), json.loads(launch_config), run_id=run_id
    )
    for name, value in stages.search_summary(experiment_uri, state).items():
        metrics.log_metric(name, value)
    return experiment_uri
