"""Stored records: the ``Record`` base, each kind's JSON as released, and the trial invariants."""

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any

import pytest

from kfnas.export.handoff import Handoff, HandoffError
from kfnas.export.saved_model import ExportRecord
from kfnas.records import Record, RecordError, RetrainingRecord
from kfnas.records.retraining import PUBLISHED
from kfnas.records.trial import (
    SCHEMA_VERSION,
    TrialCurve,
    TrialResult,
    TrialSpec,
    TrialStatus,
    TrialTraining,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "records"


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
    with pytest.raises(RecordError, match="written by a newer kfnas; upgrade kfnas"):
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


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("trial", TrialSpec),
        ("result", TrialResult),
        ("result_infeasible", TrialResult),
        ("handoff", Handoff),
        ("retraining", RetrainingRecord),
        ("export", ExportRecord),
    ],
)
def test_each_kind_reads_and_rewrites_its_released_json_byte_for_byte(name, kind):
    """``tests/golden/records`` was written by the release before the ``Record`` base."""
    text = (GOLDEN / f"{name}.json").read_text()
    record = kind.from_json(text)
    released = json.loads(text)
    assert kind.from_dict(released) == record
    if released.get("schema_version", 1) == kind.SCHEMA_VERSION:
        assert record.to_json() == text
    else:  # a kind whose layout grew since: upgraded, every released value kept as it was
        rewritten = json.loads(record.to_json())
        assert rewritten["schema_version"] == kind.SCHEMA_VERSION
        assert {k: v for k, v in rewritten.items() if k in released and k != "schema_version"} == {
            k: v for k, v in released.items() if k != "schema_version"
        }
        assert kind.from_json(record.to_json()) == record


def test_json_ready_data_encodes_enums_and_tuples():
    retraining = RetrainingRecord.from_json((GOLDEN / "retraining.json").read_text())
    assert retraining.status is PUBLISHED
    data = retraining.to_dict()
    assert (data["schema_version"], data["status"]) == (1, "published")
    export = ExportRecord.from_json((GOLDEN / "export.json").read_text()).to_dict()
    # Version 1 of export.json predated the key; read, it is upgraded to the current version.
    assert export["schema_version"] == ExportRecord.SCHEMA_VERSION
    assert export["input_size"] == [32, 32, 3] and export["model_format"] == "tensorflow"


@pytest.mark.parametrize(
    ("kind", "name", "change", "message"),
    [
        (RetrainingRecord, "retraining", {"status": "lost"}, "unknown retraining status 'lost'"),
        (RetrainingRecord, "retraining", {"schema_version": 2}, "written by a newer kfnas"),
        (ExportRecord, "export", {"schema_version": 3}, "written by a newer kfnas"),
        (ExportRecord, "export", {"colour": "red"}, r"unknown fields \['colour'\]"),
        (Handoff, "handoff", {"schema_version": 3}, "written by a newer kfnas"),
        (Handoff, "handoff", {"surprise": 1}, "does not match the handoff schema"),
    ],
)
def test_every_kind_refuses_what_it_cannot_read(kind, name, change, message):
    data = {**json.loads((GOLDEN / f"{name}.json").read_text()), **change}
    with pytest.raises(kind.ERROR, match=message):
        kind.from_dict(data, f"{name}.json")


def test_a_handoff_error_is_a_record_error():
    assert issubclass(HandoffError, RecordError) and Handoff.ERROR is HandoffError


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Swatch(Record):
    """A throwaway record kind at version 3: ``shade`` came in 2, ``colour`` was renamed in 3."""

    KIND = "swatch"
    SCHEMA_VERSION = 3
    UPGRADES = {
        2: lambda data: {"colour": data.pop("color"), **data},
    }

    colour: Colour
    sizes: tuple[int, ...] = ()
    shade: float | None = None


def test_a_new_record_kind_upgrades_older_versions_one_step_at_a_time():
    swatch = Swatch(Colour.RED, (1, 2), 0.5)
    assert swatch.to_dict() == {"schema_version": 3, "colour": "red", "sizes": [1, 2], "shade": 0.5}
    assert Swatch.from_json(swatch.to_json()) == swatch
    version_1: dict[str, Any] = {"schema_version": 1, "color": "red", "sizes": [1, 2]}
    assert Swatch.from_dict(version_1) == Swatch(Colour.RED, (1, 2))
    with pytest.raises(RecordError, match="swatch has schema_version 4, newer than 3"):
        Swatch.from_dict({**version_1, "schema_version": 4})
    with pytest.raises(RecordError, match=r"swatch is missing fields \['colour'\]"):
        Swatch.from_dict({"schema_version": 3})
    with pytest.raises(RecordError, match="unknown colour 'blue'; known: red"):
        Swatch.from_dict({"schema_version": 3, "colour": "blue"})


def test_a_version_5_result_reads_without_a_runtime_and_is_rewritten_at_the_current_version():
    old = TrialResult.from_json((GOLDEN / "result_v5.json").read_text())
    assert old.runtime == {} and old.attempts > 0
    assert json.loads(old.to_json())["schema_version"] == TrialResult.SCHEMA_VERSION
    current = TrialResult.from_json((GOLDEN / "result.json").read_text())
    assert current.runtime["strategy"] == "mirrored" and current.runtime["replicas"] == "2"


def test_a_version_6_result_reads_without_a_measurement():
    old = TrialResult.from_json((GOLDEN / "result_v6.json").read_text())
    assert old.measurement == {} and old.runtime["strategy"] == "mirrored"
    current = TrialResult.from_json((GOLDEN / "result.json").read_text())
    assert current.measurement["device"] == "nvidia-l4"
    assert current.measurement["latency"]["1"]["p90_ms"] == current.metrics["latency_p90_ms"]


def test_a_trained_record_round_trips_and_refuses_a_newer_version():
    trained = TrialTraining(4, {"AP": 0.2, "train_seconds": 9.5}, "gs://b/m", 12.0, 1, (0,))
    assert TrialTraining.from_json(trained.to_json()) == trained
    data = {**json.loads(trained.to_json()), "schema_version": 3}
    with pytest.raises(RecordError, match="written by a newer kfnas"):
        TrialTraining.from_dict(data)


def test_a_version_7_trial_and_result_read_without_rungs_and_early_stops():
    old_spec = TrialSpec.from_json((GOLDEN / "trial_v7.json").read_text())
    assert (old_spec.rung, old_spec.promoted_from) == (0, None)
    assert json.loads(old_spec.to_json())["schema_version"] == TrialSpec.SCHEMA_VERSION == 9
    old = TrialResult.from_json((GOLDEN / "result_v7.json").read_text())
    assert (old.stopped_early, old.stop_reason) == (False, "")
    current = TrialResult.from_json((GOLDEN / "result.json").read_text())
    assert current.stopped_early and current.stop_reason.startswith("median rule")
    promoted = TrialSpec.from_json((GOLDEN / "trial.json").read_text())
    assert (promoted.rung, promoted.promoted_from) == (1, 3)


def test_a_version_8_trial_reads_without_decisions_and_a_current_one_keeps_them():
    old = TrialSpec.from_json((GOLDEN / "trial_v8.json").read_text())
    assert old.decisions == {}
    current = TrialSpec.from_json((GOLDEN / "trial.json").read_text())
    assert current.decisions == {"blocks[0].kernel_size": 5, "blocks[1].expand": "x6"}
    assert dataclasses.replace(current, decisions={}) == old


def test_only_a_completed_trial_is_stopped_early_and_a_promotion_has_a_rung():
    with pytest.raises(RecordError, match="only a COMPLETED trial is stopped early"):
        TrialResult(1, TrialStatus.FAILED, error="x", stopped_early=True)
    with pytest.raises(RecordError, match=">= 1 for a promotion"):
        dataclasses.replace(spec(), promoted_from=2)
    trained = TrialTraining(4, {"AP": 0.2}, stopped_early=True, stop_reason="value rule")
    result = trained.result(TrialStatus.COMPLETED, metrics={"AP": 0.2}, reward=0.2)
    assert (result.stopped_early, result.stop_reason) == (True, "value rule")
    failed = trained.result(TrialStatus.FAILED, error="reward: no latency")
    assert (failed.stopped_early, failed.stop_reason) == (False, "")


def test_a_curve_keeps_its_points_in_step_order_and_a_rerun_replaces_later_ones():
    curve = TrialCurve(7, "AP").with_point(10, {"AP": 0.1, "loss": 2.0})
    curve = curve.with_point(20, {"AP": float("nan"), "loss": 1.5})
    curve = curve.with_point(30, {"AP": 0.3})
    assert TrialCurve.from_json(curve.to_json()) == curve
    assert curve.steps == (10, 20, 30) and curve.values == (0.1, None, 0.3)
    assert curve.metrics[1] == {"loss": 1.5}  # a NaN has no JSON form: left out
    points = curve.points()
    assert points[0] == (10, 0.1) and math.isnan(points[1][1])
    resumed = curve.with_point(20, {"AP": 0.25})  # a rerun from the step-10 checkpoint
    assert resumed.steps == (10, 20) and resumed.values == (0.1, 0.25)
    with pytest.raises(RecordError, match="steps must increase"):
        TrialCurve(7, "AP", (20, 10), (0.1, 0.2))
    with pytest.raises(RecordError, match="one value"):
        TrialCurve(7, "AP", (10,), ())
