"""Retraining stages: refusals before training, and the publish-or-reject decision.

The session's shared detection experiment (``exported_detection`` in ``tests/shared_fixtures.py``,
trained 2 steps and exported as ``v1``) is copied once for the module, since retraining writes to
it. Retraining trials are then planned through ``stages.init_retraining``; instead of training
them, most tests give them a result (and, to publish, the exported trial's checkpoint: same
architecture, same task), so the decision and what it does to ``export/latest`` are checked in
seconds. The whole pipeline, trained for real, is
``tests/e2e/test_retraining_local.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared_fixtures import copy_experiment

from kfnas import stages
from kfnas.config.studies import RETRAINING
from kfnas.data import write_detection_dataset
from kfnas.export.handoff import HANDOFF_FILE, HandoffError, HandoffNotFoundError, read_handoff
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.stages.retraining import (
    FAILED,
    PUBLISHED,
    REJECTED,
    RetrainingError,
    RetrainingFailedError,
    judge,
    read_record,
)
from kfnas.store import Experiment, open_experiment

pytestmark = pytest.mark.tf


@dataclasses.dataclass(frozen=True)
class Exported:
    uri: str
    trial_id: int
    root: Path
    new_data: object

    @property
    def experiment(self) -> Experiment:
        return open_experiment(self.uri)

    @property
    def latest(self) -> str:
        exp = self.experiment
        return exp.store.uri(exp.layout.export_latest())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, exported_detection) -> Exported:
    """A copy of the shared experiment (proxy trial exported as ``v1``); and new data."""
    root = tmp_path_factory.mktemp("retraining")
    copy = copy_experiment(exported_detection, root)
    new = write_detection_dataset(root / "new", num_train=4, num_validation=2, seed=7)
    return Exported(copy.uri, copy.trial_id, root, new)


def _plan(exported: Exported, version: str, **kwargs) -> dict:
    new = exported.new_data
    return stages.init_retraining(
        exported.latest,
        new.train_pattern,
        new.validation_pattern,
        new.annotations,
        full_train_steps=2,
        new_version=version,
        **kwargs,
    )


def _finish(exported: Exported, planned: dict, status: TrialStatus, ap: float = 0.0) -> None:
    """Records a result for the planned trial; a COMPLETED one gets v1's checkpoint."""
    exp = exported.experiment
    trial_id = planned["trial_id"]
    if status is TrialStatus.COMPLETED:
        shutil.copytree(
            exp.store.uri(exp.layout.trial_model_dir("proxy", exported.trial_id)),
            exp.store.uri(exp.layout.trial_model_dir(RETRAINING, trial_id)),
        )
        result = TrialResult(trial_id, status, {"AP": ap, "latency_ms": 1.0}, reward=ap)
    else:
        result = TrialResult(trial_id, status, error="ResourceExhaustedError: out of memory")
    exp.records.write_result(RETRAINING, result)


def _publish(exported: Exported, planned: dict, tolerance: float) -> dict:
    return stages.publish_if_not_worse(
        exported.uri,
        RETRAINING,
        planned["trial_id"],
        exported.latest,
        planned["version"],
        tolerance,
    )


def _latest_version(exported: Exported) -> str:
    return read_handoff(exported.latest).model_version


def test_a_missing_handoff_is_refused(exported):
    missing = str(Path(exported.uri, "export", "v9"))
    with pytest.raises(HandoffNotFoundError, match=r"no model handoff at .*v9.*versions in .*v1"):
        stages.init_retraining(missing, exported.new_data.train_pattern)


def test_a_handoff_of_a_newer_schema_version_is_refused(exported, tmp_path):
    v1 = json.loads(
        Path(read_handoff(exported.latest).experiment_uri, "export/v1", HANDOFF_FILE).read_text()
    )
    (tmp_path / HANDOFF_FILE).write_text(json.dumps({**v1, "schema_version": 99}))
    with pytest.raises(HandoffError, match=r"schema_version 99, newer .* upgrade kfnas"):
        stages.init_retraining(str(tmp_path), exported.new_data.train_pattern)


def test_new_data_with_classes_the_model_lacks_are_refused_before_training(exported):
    bad = write_detection_dataset(
        exported.root / "six", num_train=8, num_validation=4, num_classes=6
    )
    before = exported.experiment.records.trial_ids(RETRAINING)
    with pytest.raises(RetrainingError) as error:
        stages.init_retraining(exported.latest, bad.train_pattern, bad.validation_pattern)
    message = str(error.value)
    assert "the new data cannot retrain v1 (detection, 3 classes), nothing was trained" in message
    assert "class id" in message and "keeps the model's task and classes" in message
    assert exported.experiment.records.trial_ids(RETRAINING) == before


def test_retraining_trial_keeps_the_architecture_and_policy_and_takes_the_new_data(exported):
    planned = _plan(exported, "plan-1")
    exp = exported.experiment
    trial = exp.records.read_spec(RETRAINING, planned["trial_id"])
    handoff = read_handoff(exported.latest)
    assert planned["experiment_uri"] == exported.uri and planned["previous_version"] == "v1"
    assert (trial.space, trial.arch_json) == (handoff.space, handoff.arch_json)
    assert trial.task_overrides == handoff.task_overrides
    assert (trial.source_study, trial.source_trial) == ("proxy", exported.trial_id)
    assert trial.budget["train_steps"] == 2
    new = exported.new_data
    assert trial.data_overrides == (
        f'data.train="{new.train_pattern}"',
        f'data.validation="{new.validation_pattern}"',
        f'data.annotations="{new.annotations}"',
    )
    # experiment.json is untouched: the search's trials keep their data.
    assert exp.spec.data.train != new.train_pattern
    # Planning the same version again resumes it; another version is another trial.
    assert _plan(exported, "plan-1") == planned
    assert _plan(exported, "plan-2")["trial_id"] == planned["trial_id"] + 1
    with pytest.raises(RetrainingError, match="needs a version other than 'v1'"):
        _plan(exported, "v1")


@pytest.mark.parametrize(
    ("score", "previous", "tolerance", "publish"),
    [
        (0.5, 0.5, 0.0, True),
        (0.45, 0.5, 0.1, True),
        (0.35, 0.5, 0.1, False),
        (0.55, 0.5, -0.1, False),
        (0.7, 0.5, -0.1, True),
        (None, 0.5, 1.0, False),
        (0.1, None, 0.0, True),
    ],
)
def test_judge_publishes_only_if_not_worse_than_the_tolerance(score, previous, tolerance, publish):
    decided, reason = judge(score, previous, tolerance)
    assert decided is publish and reason


def test_a_worse_retraining_is_rejected_and_latest_stays(exported):
    previous = read_handoff(exported.latest)
    planned = _plan(exported, "worse")
    _finish(exported, planned, TrialStatus.COMPLETED, ap=previous.metrics["AP"] - 0.5)
    record = _publish(exported, planned, tolerance=0.1)
    assert record["status"] == REJECTED
    assert (record["previous_score"], record["tolerance"]) == (previous.metrics["AP"], 0.1)
    assert record["score"] == pytest.approx(previous.metrics["AP"] - 0.5)
    assert "worse than the previous version by more than the tolerance" in record["reason"]
    assert _latest_version(exported) == previous.model_version
    assert not Path(exported.uri, "export", "worse").exists()
    assert read_record(exported.experiment, "worse").status == REJECTED
    assert _publish(exported, planned, tolerance=1.0)["status"] == REJECTED  # judged once


def test_a_failed_retraining_never_publishes(exported):
    previous = _latest_version(exported)
    planned = _plan(exported, "failed")
    _finish(exported, planned, TrialStatus.FAILED)
    with pytest.raises(RetrainingFailedError, match=f"{previous} stays current: .*out of memory"):
        _publish(exported, planned, tolerance=100.0)
    assert read_record(exported.experiment, "failed").status == FAILED
    assert _latest_version(exported) == previous
    assert not Path(exported.uri, "export", "failed").exists()


def test_a_retraining_within_the_tolerance_is_published_and_becomes_latest(exported):
    previous = read_handoff(exported.latest)
    planned = _plan(exported, "v2")
    _finish(exported, planned, TrialStatus.COMPLETED, ap=previous.metrics["AP"] - 0.01)
    record = _publish(exported, planned, tolerance=0.05)
    assert record["status"] == PUBLISHED
    assert record["export_uri"] == str(Path(exported.uri, "export", "v2"))
    published = read_handoff(exported.latest)
    assert (published.model_version, published.study) == ("v2", RETRAINING)
    assert published.data["train"] == exported.new_data.train_pattern
    assert [step["study"] for step in published.lineage] == [RETRAINING, "proxy"]
    assert read_handoff(str(Path(exported.uri, "export", "v1"))).model_version == "v1"
