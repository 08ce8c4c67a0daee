"""The measurement step on a real trained detection trial: protocol, device, local exclusivity.

The shared exported experiment's trial is turned back into "trained, not measured" (its
``result.json`` replaced by the ``trained.json`` its training would have written), then measured
by ``measure_trial`` in this process, and by the local launcher's measurement worker while a
stand-in training process runs beside it: the worker must pause that process while it times.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pytest
from shared_fixtures import copy_experiment
from tensorboard_logs import read_run

from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.launch import JobState, TrialJob
from kfnas.launch.base import MEASURE_KIND
from kfnas.launch.local import LocalLauncher
from kfnas.records.trial import TrialSpec, TrialStatus, TrialTraining
from kfnas.stages import NotTrainedError, measure_trial, measure_worker

MEASURED = {"params", "flops", "latency_ms"}


def _trained_copy(exported, root: Path, *overrides: str, latency_runs: int = 5):
    """A copy of the exported experiment whose trial is trained but not measured."""
    copy = copy_experiment(exported, root)
    exp, trial_id = copy.experiment, copy.trial_id
    result = exp.records.read_result("proxy", trial_id)
    Path(exp.store.uri(exp.layout.trial_result("proxy", trial_id))).unlink()
    quality = {k: v for k, v in result.metrics.items() if k not in MEASURED}
    exp.records.write_trained(
        "proxy", TrialTraining(trial_id, quality, result.model_uri, result.duration_s, 1, (0,))
    )
    _set_spec(copy, *overrides)
    trial_path = exp.layout.trial_spec("proxy", trial_id)
    trial = TrialSpec.from_json(exp.store.read_text(trial_path))
    budget = {**trial.budget, "latency_runs": latency_runs}
    exp.store.write_text(trial_path, TrialSpec(**{**trial.__dict__, "budget": budget}).to_json())
    return copy


def test_a_trained_trial_is_measured_by_the_protocol_and_scored(exported_detection, tmp_path):
    copy = _trained_copy(exported_detection, tmp_path, "measurement.batch_sizes=[2]")
    logs = Path(
        copy.experiment.store.uri(copy.experiment.layout.trial_logs_dir("proxy", copy.trial_id))
    )
    trained_events = set(logs.glob("events.out.tfevents.*"))
    result = measure_trial(copy.uri, "proxy", copy.trial_id)
    assert result.status is TrialStatus.COMPLETED, result.error
    metrics = result.metrics
    assert metrics["latency_p90_ms"] >= metrics["latency_ms"] > 0
    assert metrics["flops"] > 0 and metrics["params"] > 0 and "latency_ms_b2" in metrics
    assert result.reward == pytest.approx(metrics["AP"])  # no constraint: the metric
    record = result.measurement
    assert record["device"] == "local" and record["protocol"]["runs"] == 5
    assert record["protocol"]["batch_sizes"] == [1, 2]
    assert record["latency"]["1"]["median_ms"] == pytest.approx(metrics["latency_ms"], rel=1e-3)
    stored = copy.experiment.records.read_result("proxy", copy.trial_id)
    assert stored == result
    assert measure_trial(copy.uri, "proxy", copy.trial_id) == result  # idempotent
    # TensorBoard: the training's HParams session, and the measurement's event file beside it.
    (measured_events,) = set(logs.glob("events.out.tfevents.*")) - trained_events
    measured_run = read_run(measured_events)
    assert measured_run.scalars["final/latency_ms"][0][1] == pytest.approx(metrics["latency_ms"])
    assert measured_run.scalars["final/reward"][0][1] == pytest.approx(result.reward)
    assert "final/AP" not in measured_run.scalars  # the training's event file has it
    session = read_run(logs)
    assert session.group == f"proxy/{copy.trial_id}" and session.hparams["status"] == "COMPLETED"
    assert "final/AP" in session.scalars and "final/latency_p90_ms" in session.scalars
    assert "intermediate_block_levels[0]" in session.hparams  # the trial's decisions
    # The same model measured again (a validation or final training of this architecture): the
    # stored measurement, saying so; with measurement.reuse off, a new one.
    again = _measured_again(copy)
    assert again.measurement["reused_from"] == {"study": "proxy", "trial_id": copy.trial_id}
    assert again.metrics == result.metrics and again.reward == result.reward
    assert again.measurement["key"] == record["key"]
    _set_spec(copy, "measurement.reuse=false")
    fresh = _measured_again(copy)
    assert "reused_from" not in fresh.measurement
    assert fresh.measurement["key"] == record["key"] and fresh.metrics["flops"] == metrics["flops"]


def _set_spec(copy, *overrides: str) -> None:
    exp = copy.experiment
    spec_path = exp.layout.experiment_json()
    spec = ExperimentSpec.from_json(exp.store.read_text(spec_path)).with_overrides(overrides)
    exp.store.write_text(spec_path, spec.to_json())


def _measured_again(copy):
    """Forgets the trial's result (its trained.json stays) and measures it again."""
    exp = copy.experiment
    Path(exp.store.uri(exp.layout.trial_result("proxy", copy.trial_id))).unlink()
    return measure_trial(copy.uri, "proxy", copy.trial_id)


def test_a_device_the_run_does_not_measure_on_is_refused(exported_detection, tmp_path):
    copy = _trained_copy(exported_detection, tmp_path, "measurement.device=pixel-7")
    with pytest.raises(SpecError, match="no profile of this run defines 'pixel-7'"):
        measure_trial(copy.uri, "proxy", copy.trial_id)
    assert copy.experiment.records.read_result("proxy", copy.trial_id) is None


def test_a_trial_that_was_never_trained_cannot_be_measured(exported_detection, tmp_path):
    copy = _trained_copy(exported_detection, tmp_path)
    exp = copy.experiment
    Path(exp.store.uri(exp.layout.trial_trained("proxy", copy.trial_id))).unlink()
    with pytest.raises(NotTrainedError, match="has not been trained"):
        measure_trial(copy.uri, "proxy", copy.trial_id)


TICKER = """
import sys, time
with open(sys.argv[1], "a") as out:
    while True:
        out.write(f"{time.monotonic()}\\n"); out.flush(); time.sleep(0.01)
"""


class _TickingLauncher(LocalLauncher):
    """Trial jobs are a process that writes the time every 10 ms (a training stand-in)."""

    def __init__(self, ticks: Path, **kwargs):
        super().__init__(**kwargs)
        self.ticks = ticks

    def command(self, job):
        return [sys.executable, "-c", TICKER, str(self.ticks)]


def _measured(launcher: LocalLauncher, job: TrialJob, logs: Path) -> str:
    """Starts the measurement job, waits until it succeeds; the worker's pid."""
    pid = launcher.start(job)["pid"]
    deadline = time.monotonic() + 240
    while launcher.poll([job.name])[job.name].state.active:
        assert time.monotonic() < deadline, (logs / "measurements.log").read_text()
        launcher.wait([job.name], 1.0, time.sleep)
    assert launcher.poll([job.name])[job.name].state is JobState.SUCCEEDED
    return pid


def test_the_local_measurement_worker_pauses_trainings_while_it_times(exported_detection, tmp_path):
    copy = _trained_copy(exported_detection, tmp_path / "store", latency_runs=150)
    ticks = tmp_path / "ticks.txt"
    logs = tmp_path / "logs"
    # One model per worker: the second request goes to a fresh worker (the retirement handshake).
    launcher = _TickingLauncher(ticks, log_dir=str(logs), measurements_per_worker=1)
    trial = TrialJob(copy.uri, "proxy", copy.trial_id + 1)  # any name: a stand-in
    measurement = TrialJob(copy.uri, "proxy", copy.trial_id, kind=MEASURE_KIND)
    try:
        launcher.start(trial)
        first = _measured(launcher, measurement, logs)
        time.sleep(0.3)  # the ticker runs again once the timing is over
        retired = launcher._server
        assert retired is not None and not retired.alive()  # it said "retiring" before "done"
        assert retired.proc.wait(timeout=60) == 0
        # The next request: a fresh worker (the trial is measured already: it answers at once),
        # and the retired worker's end did not resume or pause anything.
        assert _measured(launcher, measurement, logs) != first
        assert not launcher._paused
    finally:
        launcher.stop(trial.name)
        launcher.close()
    result = copy.experiment.records.read_result("proxy", copy.trial_id)
    assert result.completed, result.error
    times = [float(line) for line in ticks.read_text().split()]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    timed = result.measurement["seconds"]["timed"]
    # The ticker stood still at least as long as the timed runs took, and ran before and after.
    assert gaps[-1] >= 0.9 * timed > 0.2
    assert times[-1] > times[0] + gaps[-1]


def test_the_worker_refuses_a_negative_quota(capsys):
    with pytest.raises(SystemExit):
        measure_worker.main(["--serve", "--retire-after", "-1"])
    assert "--retire-after must be >= 0 (0: never), got -1" in capsys.readouterr().err
