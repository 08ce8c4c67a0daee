"""Trial records: JSON round trip, schema versions and invariants."""

import dataclasses
import json

import pytest

from kfnas.records.trial import SCHEMA_VERSION, RecordError, TrialResult, TrialSpec, TrialStatus


def spec():
    return TrialSpec(
        experiment="exp",
        study="proxy",
        trial_id=7,
        round=2,
        space="spinenet",
        dna_json='{"_type": "pyglove.DNA"}',
        arch_json="{}",
        budget={"train_steps": 10, "batch_size": 2},
        seed=3,
    )


@pytest.mark.parametrize(
    "record",
    [
        spec(),
        TrialResult(7, TrialStatus.COMPLETED, {"AP": 0.3, "latency_ms": 4.5}, 0.3, (0.3, -4.5)),
        TrialResult(8, TrialStatus.FAILED, error="ValueError: bad shape"),
        TrialResult(9, TrialStatus.INFEASIBLE, {"step": 12.0}, error="loss became NaN at step 12"),
    ],
)
def test_round_trip(record):
    text = record.to_json()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert type(record).from_json(text) == record


def test_status_is_stored_as_its_name():
    data = json.loads(TrialResult(1, TrialStatus.INFEASIBLE, error="OOM").to_json())
    assert data["status"] == "INFEASIBLE"


def test_newer_schema_is_refused_with_upgrade_hint():
    data = json.loads(spec().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordError, match="written by a newer kfnas: upgrade kfnas"):
        TrialSpec.from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": None}, "no valid schema_version"),
        ({"colour": "red"}, r"unknown fields \['colour'\]"),
        ({"status": "DONE"}, "unknown trial status 'DONE'; known: COMPLETED, FAILED, INFEASIBLE"),
    ],
)
def test_bad_result_records(change, message):
    data = json.loads(TrialResult(1, TrialStatus.COMPLETED, reward=0.5).to_json())
    data.update(change)
    with pytest.raises(RecordError, match=message):
        TrialResult.from_json(json.dumps(data))


def test_missing_field_and_non_json():
    data = json.loads(spec().to_json())
    del data["dna_json"]
    with pytest.raises(RecordError, match=r"missing fields \['dna_json'\]"):
        TrialSpec.from_json(json.dumps(data))
    with pytest.raises(RecordError, match="not valid JSON"):
        TrialSpec.from_json("{oops")
    with pytest.raises(RecordError, match="must be a JSON object"):
        TrialSpec.from_json("[1]")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": TrialStatus.COMPLETED}, "COMPLETED trial needs a finite reward"),
        ({"status": TrialStatus.COMPLETED, "reward": float("nan")}, "finite reward"),
        ({"status": TrialStatus.COMPLETED, "reward": 1.0, "error": "x"}, "has no error"),
        ({"status": TrialStatus.FAILED}, "FAILED trial needs its reason"),
        ({"status": TrialStatus.INFEASIBLE, "error": "NaN", "reward": 0.1}, "has no reward"),
        ({"status": "COMPLETED", "reward": 1.0}, "must be a TrialStatus"),
    ],
)
def test_result_invariants(kwargs, message):
    with pytest.raises(RecordError, match=message):
        TrialResult(trial_id=1, **kwargs)


def test_spec_invariants():
    with pytest.raises(RecordError, match="round >= 1"):
        TrialSpec("e", "s", 0, 0, "x", "{}", "{}")


def test_a_retrained_trial_records_its_source():
    copy = dataclasses.replace(spec(), study="validation", source_study="proxy", source_trial=7)
    assert TrialSpec.from_json(copy.to_json()) == copy
    with pytest.raises(RecordError, match="set together or not at all"):
        dataclasses.replace(spec(), source_study="proxy")


def test_version_1_records_read_without_the_source_fields():
    data = json.loads(spec().to_json())
    del data["source_study"], data["source_trial"]
    data["schema_version"] = 1
    assert TrialSpec.from_json(json.dumps(data)) == spec()
