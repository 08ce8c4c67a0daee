"""The retraining pipeline under ``kfp.local``: publish a retrained model, then reject one.

The retraining pipeline and its stages do not depend on the task kind, so this test retrains the
smallest real model, not the session's shared detection experiment (whose detection trainings,
COCO evaluations and exports cost minutes here): ``exported_classification`` builds, once for the
module, the experiment of ``CLASSIFICATION_SPEC`` (``tests/shared_fixtures.py``: MnasNet at 32 px,
batch 2) on the session's ``classification_data``, trains its one proxy trial 2 steps and exports
it as ``v1`` through the stages, as ``exported_detection`` does. The test works on a copy, since
retraining writes to the experiment. The retraining pipeline then runs twice on new generated data
(another seed), each step a subprocess of this Python, each run training the exported architecture
2 steps, measuring and exporting it. The metric, top-1 accuracy, lies in [0, 1], so with tolerance
2.0 a retraining is never worse by more than that: it publishes ``v2`` and ``export/latest`` moves
to it; with tolerance -2.0 (better by two whole accuracy points: impossible) it is rejected, the
run still succeeds, and ``latest`` stays at ``v2``. Task-specific training, evaluation and export
(detection's AP included) are tested elsewhere; the retraining stages on the detection experiment
in ``tests/stages/test_retraining.py``.
"""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared_fixtures import (
    CLASSIFICATION_SPEC,
    EXPORT_IMAGE,
    EXPORT_RUN_ID,
    ExportedExperiment,
    copy_experiment,
    data_overrides,
)

from kfnas import stages
from kfnas.config.studies import RETRAINING
from kfnas.data import write_classification_dataset
from kfnas.export.handoff import read_handoff
from kfnas.pipelines.local import run_retraining_locally
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

METRIC = "top_1_accuracy"


@pytest.fixture(scope="module")
def exported_classification(tmp_path_factory, classification_data) -> ExportedExperiment:
    """One MnasNet trial trained 2 steps and exported as ``v1`` by ``stages.export_model``."""
    root = tmp_path_factory.mktemp("exported-classification")
    uri = stages.init_experiment(
        CLASSIFICATION_SPEC, [f"store_root={root}", *data_overrides(classification_data)]
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    result = stages.run_trial(uri, "proxy", trial_id)
    assert result.completed, result.error
    stages.export_model(uri, "proxy", trial_id, "v1", run_id=EXPORT_RUN_ID, image=EXPORT_IMAGE)
    return ExportedExperiment(uri, trial_id, classification_data)


def test_retraining_publishes_when_not_worse_and_keeps_latest_when_worse(
    tmp_path, exported_classification
):
    uri = copy_experiment(exported_classification, tmp_path).uri
    latest = f"{uri}/export/latest"
    new = write_classification_dataset(tmp_path / "new", num_train=4, num_validation=2, seed=11)
    arguments = {
        "handoff_uri": latest,
        "train_data": new.train_pattern,
        "validation_data": new.validation_pattern,
        "annotations": new.annotations,
        "full_train_steps": 2,
    }

    with (tmp_path / "kfp.log").open("w") as log:
        first = run_retraining_locally(
            {**arguments, "tolerance": 2.0, "new_version": "v2"},
            pipeline_root=tmp_path / "kfp",
            log_file=log,
        )
        second = run_retraining_locally(
            {**arguments, "tolerance": -2.0, "new_version": "v3"},
            pipeline_root=tmp_path / "kfp",
            log_file=log,
        )

    assert (first, second) == ("published", "rejected")
    current = read_handoff(latest)
    assert (current.model_version, current.study) == ("v2", RETRAINING)
    assert current.data["train"] == new.train_pattern
    assert current.arch_json == read_handoff(f"{uri}/export/v1").arch_json
    assert [step["study"] for step in current.lineage] == [RETRAINING, "proxy"]
    assert not Path(uri, "export", "v3").exists()
    # The tolerances above mean "never worse" and "impossibly better" only for a score in [0, 1].
    assert current.metric == METRIC and 0.0 <= current.metrics[METRIC] <= 1.0
    records = {
        version: json.loads(Path(uri, "retraining", f"{version}.json").read_text())
        for version in ("v2", "v3")
    }
    assert [r["status"] for r in records.values()] == ["published", "rejected"]
    assert records["v3"]["previous_version"] == "v2"
    assert records["v3"]["previous_score"] == current.metrics[METRIC]
    assert records["v3"]["tolerance"] == -2.0
    assert open_experiment(uri).records.trial_ids(RETRAINING) == [1, 2]
