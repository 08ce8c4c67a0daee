"""A full training launched as a job of its own: the pipeline step of a multi-node trial.

When the cluster profile's ``training`` section trains on several nodes (``workers`` above 1 with
an ``engine``), a pipeline's full-training step (validation, final, retraining) does not train in
its own pod: ``launch_trial`` starts the trial through the launcher the search controller uses
(``kfnas.launch``: a Kubeflow Trainer v2 ``TrainJob`` or a Training Operator v1 ``TFJob``, whose
chief trains and writes ``trained.json`` exactly as a single-pod ``run_trial`` step does),
follows the job until it ends, and returns the trial's record from the store (the pipeline's
measurement step then measures it); a job that ended without one is recorded FAILED with the
launcher's reason (``kfnas.stages.controller.record_job_end``).

Like ``run_trial`` it is idempotent: a finished trial returns at once, and a restarted step adopts
the running job of its trial (job names are deterministic) instead of starting a second one. The
launch location (job, namespace, the ``kubectl logs`` line of node 0) goes to the trial's
``launch.json`` and to the step's log. Bounds: one launcher poll per ``poll_s``; the step holds no
accelerator.

To follow jobs differently (a watch instead of polls): give the launcher a ``wait`` that returns
when the job changes; this loop already calls it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from kfnas.launch import JobState, JobStatus, TrialJob, launcher_from_config
from kfnas.records.trial import TrialResult, TrialTraining
from kfnas.stages.controller import record_job_end
from kfnas.store import open_experiment


def launch_trial(
    experiment_uri: str,
    study: str,
    trial_id: int,
    launch_config: Mapping[str, Any],
    run_id: str = "",
    *,
    poll_s: float = 30.0,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> TrialResult | TrialTraining:
    """Runs one full training as a job of the launcher and returns its recorded result.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study (``validation``, ``final``, a retraining study).
        trial_id: A proposed trial of it.
        launch_config: The launcher's config, as compiled into the pipeline
            (``kfnas.pipelines.trial_pods.launch_config``); the job gets its ``training`` settings.
        run_id: The pipeline run (a label on the job).
        poll_s: Seconds between polls of the job.
        log: Receives the launch location and how the job ended.
        sleep: Waits between polls (tests pass a fast one).

    Returns:
        The trial's result, as its chief recorded it or as recorded here for a job that died.

    Raises:
        LaunchError: The launcher cannot start the job (RBAC, an engine not installed, secrets),
            before anything runs.
    """
    exp = open_experiment(experiment_uri)
    done = exp.records.read_result(study, trial_id) or exp.records.read_trained(study, trial_id)
    if done is not None:
        return done
    launcher = launcher_from_config({**launch_config, "run_id": run_id})
    try:
        launcher.check()
        job = TrialJob(exp.uri, study, trial_id, kind="training")
        location = launcher.start(job)
        exp.store.write_text(
            exp.layout.trial_launch(study, trial_id), json.dumps(location, indent=1, sort_keys=True)
        )
        name = location.get("job", job.name)
        log(f"{study} trial {trial_id}: job {name}; logs: {location.get('log', '')}")
        while True:
            status = launcher.poll([job.name]).get(job.name, JobStatus(JobState.MISSING))
            if not status.state.active:
                break
            launcher.wait([job.name], poll_s, sleep)
    finally:
        launcher.close()
    result = record_job_end(exp, study, trial_id, status)
    if isinstance(result, TrialTraining):
        log(f"{study} trial {trial_id}: trained; the measurement step measures it")
        return result
    log(
        f"{study} trial {trial_id}: {result.status.value}"
        + (f" ({result.error})" if result.error else "")
    )
    return result
