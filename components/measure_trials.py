"""The ``measure_trials`` step: measure trained trials on the latency target device.

It runs on the cluster profile's ``latency`` section (the device the model is deployed on, named
by ``KFNAS_LATENCY_DEVICE``, with ``KFNAS_LATENCY_THREADS`` threads pinned) and measures the
trials one at a time, so no measurement shares the device with another model or a training. Each
trial's ``result.json`` (latency, FLOPs, parameters, reward) is written here: the trainings before
it (``run_trial``, ``launch_trial``) only train and evaluate. Measuring a trial already measured
returns its result as it is. The metrics are logged to the ``metrics`` artifact: per trial as
``<id>/<metric>`` (``3/latency_ms``, ``3/reward``), or unprefixed when there is one trial.
"""

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def measure_trials(
    experiment_uri: str, study: str, trial_ids: list[int], metrics: Output[Metrics]
) -> None:
    """Measures each trained trial, one at a time (at once if already measured)."""
    from kfnas import stages

    # A list built in the pipeline from a task output carries its ids as text ("7.0" locally).
    results = stages.measure_trials(experiment_uri, study, [int(float(i)) for i in trial_ids])
    for r in results:
        prefix = f"{r.trial_id}/" if len(results) > 1 else ""
        values = {**r.metrics, **({"reward": r.reward} if r.reward is not None else {})}
        for name, value in sorted(values.items()):
            metrics.log_metric(prefix + name, value)
