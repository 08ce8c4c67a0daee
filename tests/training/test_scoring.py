"""``score_trial``: a training and a measurement become the trial's result, reward and record.

A TensorFlow Lite conversion that failed is recorded on the trial; when a constraint needs that
latency the trial is FAILED with the conversion error, unless the spec allows the fallback to the
TensorFlow latency.
"""

from __future__ import annotations

import pytest

from kfnas.config.spec import ENV_LATENCY_DEVICE, ENV_LATENCY_THREADS, LOCAL_DEVICE, ExperimentSpec
from kfnas.records.trial import TrialStatus, TrialTraining
from kfnas.training.measurement import LOCAL_THREADS, latency_device, score_trial
from kfnas.training.protocol import ModelMeasurement

TRAINING = TrialTraining(3, {"AP": 0.5, "train_seconds": 10.0}, "gs://b/m", 40.0, 1, (0,))
ERROR = "ConverterError: op 'PyFunc' is neither a custom op nor a flex op"


def _spec(*overrides: str) -> ExperimentSpec:
    return ExperimentSpec().with_overrides(["objectives.metric=AP", *overrides])


def _measured(**metrics: float) -> ModelMeasurement:
    base = {"params": 1000.0, "flops": 2e6, "latency_ms": 20.0, "latency_p90_ms": 22.0}
    record = {"protocol": {"runs": 10}, "tflite": {"int8": {"error": ERROR}}}
    return ModelMeasurement({**base, **metrics}, record, {"tflite_int8": ERROR})


def test_the_reward_uses_the_measurement_and_the_record_keeps_the_device():
    spec = _spec("objectives.constraints=[{measure: latency_ms, target: 10.0, form: hard}]")
    result = score_trial(spec, TRAINING, _measured(), device="cpu-4", seconds=3.5)
    assert result.status is TrialStatus.COMPLETED
    assert result.reward == 0.5 * 10.0 / 20.0
    assert result.objectives == (0.5, -20.0)
    assert result.metrics["train_seconds"] == 10.0 and result.metrics["latency_p90_ms"] == 22.0
    assert result.measurement["device"] == "cpu-4" and result.measurement["total_seconds"] == 3.5
    assert result.measurement["errors"] == {"tflite_int8": ERROR}  # recorded, not needed here
    assert (result.model_uri, result.attempts, result.duration_s) == ("gs://b/m", 1, 40.0)


def test_a_failed_conversion_a_constraint_needs_fails_the_trial_with_the_error():
    spec = _spec(
        "measurement.tflite=[int8]",
        "objectives.constraints=[{measure: tflite_int8_latency_ms, target: 10.0}]",
    )
    result = score_trial(spec, TRAINING, _measured(), device="local")
    assert result.status is TrialStatus.FAILED and result.reward is None
    assert ERROR in result.error
    assert "set measurement.tflite_fallback: true" in result.error
    assert result.measurement["tflite"]["int8"]["error"] == ERROR


def test_with_the_fallback_allowed_the_tensorflow_latency_stands_in():
    spec = _spec(
        "measurement.tflite=[int8]",
        "measurement.tflite_fallback=true",
        "objectives.constraints=[{measure: tflite_int8_latency_ms, target: 10.0}]",
    )
    result = score_trial(spec, TRAINING, _measured(), device="local")
    assert result.status is TrialStatus.COMPLETED
    assert result.metrics["tflite_int8_latency_ms"] == 20.0
    assert result.measurement["fallback"] == {"tflite_int8_latency_ms": "latency_ms"}
    assert result.reward == 0.5 * 10.0 / 20.0


def test_the_latency_device_and_threads_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_LATENCY_DEVICE, raising=False)
    monkeypatch.delenv(ENV_LATENCY_THREADS, raising=False)
    assert latency_device() == (LOCAL_DEVICE, LOCAL_THREADS) == ("local", 1)
    monkeypatch.setenv(ENV_LATENCY_DEVICE, "cpu-4")
    assert latency_device() == ("cpu-4", 0)  # a profile's device: TensorFlow's own threads
    monkeypatch.setenv(ENV_LATENCY_THREADS, "4")
    assert latency_device() == ("cpu-4", 4)
    monkeypatch.setenv(ENV_LATENCY_THREADS, "four")
    with pytest.raises(ValueError, match=r"fix steps\.latency\.threads of the cluster profile"):
        latency_device()
