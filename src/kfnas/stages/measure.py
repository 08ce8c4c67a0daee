"""The measurement step: trained trials measured on the latency device, one model at a time.

A trial's pod only trains and evaluates (``run_trial(measure=False)`` writes ``trained.json``);
``measure_trial`` then rebuilds its model from the stored checkpoint on the device the cluster
profile's ``latency`` section names, measures it by the fixed protocol
(``kfnas.training.protocol``: warm-up, timed batch-1 runs and the spec's batch sizes, median and
p90, FLOPs, parameters, peak memory, optional TensorFlow Lite), computes the reward and writes
``result.json``. A model that computes the same as one measured before in this experiment on
this device (a proxy trial's architecture trained again in the validation or final study) gets
that measurement (``measurement.reuse``; ``StoredMeasurements``: ``<experiment>/measurements/``),
and its record says ``reused_from``. Until then the trial has no result, so the search algorithm
never sees a reward that does not exist yet. The search controller sends each trained trial to a
measurement job (``python -m kfnas.stages.measure_worker``), one at a time; the pipelines run
``measure_trials`` after their validation, final and retraining trainings.

To measure something more: see ``kfnas.training.measurement``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from kfnas.config.spec import SpecError
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.store import open_experiment
from kfnas.store.base import ObjectExists, ObjectNotFound, local_files
from kfnas.store.trials import TrialAlreadyFinished
from kfnas.tasks import TASKS
from kfnas.tasks.frameworks import framework_of
from kfnas.validation import latency_device_problems

log = logging.getLogger(__name__)


class NotTrainedError(RuntimeError):
    """A trial asked to be measured has neither a result nor a ``trained.json``."""


class StoredMeasurements:
    """The experiment's measurements on one latency device (``protocol.KnownMeasurements``).

    Each is ``<experiment>/measurements/<device>/<key>.json``: the measurement of the trial that
    made it, and which trial that was. The first one stored under a key stays.

    Args:
        exp: The open experiment.
        device: The latency device.
        study: The study of the trial being measured (named in what it stores).
        trial_id: The trial being measured.
    """

    def __init__(self, exp: Any, device: str, study: str, trial_id: int):
        self.exp, self.device, self.study, self.trial_id = exp, device, study, trial_id

    def get(self, key: str) -> Any:
        """The stored measurement, its record saying ``reused_from``; None when there is none."""
        from kfnas.training.stats import ModelMeasurement

        path = self.exp.layout.measurement(self.device, key)
        try:
            stored = json.loads(self.exp.store.read_text(path))
            record = {**stored["record"], "reused_from": stored["measured"]}
            return ModelMeasurement(stored["metrics"], record, stored["errors"])
        except ObjectNotFound:
            return None
        except (ValueError, KeyError, TypeError) as e:  # unreadable: measure again
            log.warning("ignoring the stored measurement %s: %s", path, e)
            return None

    def put(self, key: str, measured: Any) -> None:
        """Stores a new measurement (one already stored under ``key`` stays)."""
        stored = {
            "measured": {"study": self.study, "trial_id": self.trial_id},
            "metrics": measured.metrics,
            "record": measured.record,
            "errors": measured.errors,
        }
        path = self.exp.layout.measurement(self.device, key)
        with contextlib.suppress(ObjectExists):  # measured meanwhile: the first one stays
            self.exp.store.write_text(path, json.dumps(stored, indent=1), if_absent=True)


def measure_trial(
    experiment_uri: str,
    study: str,
    trial_id: int,
    *,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
) -> TrialResult:
    """Measures one trained trial on this process's latency device and records its result.

    Idempotent: a trial with a ``result.json`` returns it. The device and the threads to pin
    come from ``KFNAS_LATENCY_DEVICE`` and ``KFNAS_LATENCY_THREADS`` (the cluster profile's
    ``latency`` section; ``local`` and unpinned without one). A measurement that fails (the model
    does not rebuild, the device runs out of memory) records the trial FAILED with the reason, so
    the search goes on.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The trial's study.
        trial_id: A trial whose training wrote ``trained.json``.
        exclusive: Entered around each timed part only (the local launcher pauses the trainings
            running beside it meanwhile); ``None``: nothing to pause.

    Raises:
        NotTrainedError: The trial has no ``trained.json`` (train it first).
        SpecError: The spec's ``measurement.device`` is not this run's latency device.
    """
    from kfnas.training.measurement import latency_device  # TensorFlow-free until it measures

    exp = open_experiment(experiment_uri)
    records = exp.records
    done = records.read_result(study, trial_id)
    if done is not None:
        return done
    trained = records.read_trained(study, trial_id)
    if trained is None:
        raise NotTrainedError(
            f"trial {trial_id} of study {study!r} has not been trained (no "
            f"{exp.store.uri(exp.layout.trial_trained(study, trial_id))}): run the trial first"
        )
    device, threads = latency_device()
    if problems := latency_device_problems(exp.spec, device):
        raise SpecError("; ".join(problems))
    began = time.monotonic()
    try:
        result = _measure(exp, study, trial_id, trained, device, threads, exclusive, began)
    except Exception as e:  # One model that cannot be measured must not stop the study.
        log.warning("measuring trial %d of %s failed: %s", trial_id, study, e)
        result = trained.result(
            TrialStatus.FAILED,
            metrics=dict(trained.metrics),
            error=f"measurement on {device} failed: {type(e).__name__}: {e}",
        )
    try:
        records.write_result(study, result)
    except TrialAlreadyFinished:  # another measurement recorded it meanwhile
        return records.read_result(study, trial_id) or result
    _add_measured_logs(exp, study, trained, result)
    return result


def _add_measured_logs(exp: Any, study: str, trained: Any, result: TrialResult) -> None:
    """Adds the measured figures and reward to the trial's TensorBoard logs; never raises.

    They are ``final/`` scalars (``final/latency_ms``, ``final/reward``) in an event file of their
    own, beside the training's in the trial's ``logs/`` (its HParams session).
    """
    from kfnas.training.hparams import final_metrics, write_final_metrics

    trial_id = result.trial_id
    measured = {k: v for k, v in final_metrics(result).items() if k not in trained.metrics}
    if not measured:  # a failed measurement adds nothing
        return
    try:
        step = int(exp.records.read_spec(study, trial_id).budget.get("train_steps", 0))
        folder = exp.layout.trial_logs_dir(study, trial_id)
        with tempfile.TemporaryDirectory(prefix=f"kfnas-measure-logs-{trial_id}-") as logs:
            write_final_metrics(logs, measured, step=step)
            for relative, file in local_files(logs):  # event file names are unique
                exp.store.write_bytes(f"{folder}/{relative}", file.read_bytes(), if_absent=True)
    except Exception as e:  # TensorBoard logs must never fail a measured trial
        log.warning(
            "trial %d of %s: could not add its measurement to its logs: %s", trial_id, study, e
        )


def _measure(
    exp: Any,
    study: str,
    trial_id: int,
    trained: Any,
    device: str,
    threads: int,
    exclusive: Callable[[], AbstractContextManager[Any]] | None,
    began: float,
) -> TrialResult:
    """Rebuilds the trial's model from its stored checkpoint, measures and scores it."""
    from kfnas.training.measurement import score_trial
    from kfnas.training.runner import trial_experiment_spec

    trial = exp.records.read_spec(study, trial_id)
    spec = trial_experiment_spec(exp.spec, trial)
    # The task's framework pins its threads first, rebuilds the model and measures it.
    framework = framework_of(TASKS.get(spec.task.kind))
    reuse = {}
    if spec.measurement.reuse and framework.reuses_measurements:
        reuse["known"] = StoredMeasurements(exp, device, study, trial_id)
    measure = framework.entry("measurer")
    with tempfile.TemporaryDirectory(prefix=f"kfnas-measure-{trial_id}-") as work:
        exp.store.download_dir(exp.layout.trial_model_dir(study, trial_id), work)
        measured = measure(spec, trial, work, threads=threads, exclusive=exclusive, **reuse)
    return score_trial(spec, trained, measured, device=device, seconds=time.monotonic() - began)


def measure_trials(experiment_uri: str, study: str, trial_ids: Sequence[int]) -> list[TrialResult]:
    """Measures trained trials one after another (the pipelines' step after full trainings).

    A trial that already has its result (it failed in training, or was measured before) is
    returned as it is.

    Raises:
        NotTrainedError: A trial has neither a result nor ``trained.json``.
        SpecError: The spec's ``measurement.device`` is not this run's latency device.
    """
    return [measure_trial(experiment_uri, study, int(trial_id)) for trial_id in trial_ids]
