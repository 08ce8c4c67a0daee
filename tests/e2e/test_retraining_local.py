"""The retraining pipeline under ``kfp.local``: publish a retrained model, then reject one.

A tiny detection experiment is exported as ``v1`` through the stages (one 2-step spinenet_mbconv
trial, as in ``tests/integration/test_handoff_export.py``). The retraining pipeline then runs
twice on new generated data (another seed), each step a subprocess of this Python, each run
training the exported architecture 2 steps. COCO's AP lies in [0, 1], or is -1 when undefined, so
with tolerance 2.0 a retraining is never worse by more than that: it publishes ``v2`` and
``export/latest`` moves to it; with tolerance -2.0 (better by two whole AP points: impossible) it
is rejected, the run still succeeds, and ``latest`` stays at ``v2``.
"""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas import stages
from kfnas.config.studies import RETRAINING
from kfnas.data import write_detection_dataset
from kfnas.export.handoff import read_handoff
from kfnas.pipelines.local import run_retraining_locally
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

SPEC = """
name: retraining-e2e
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 2,
            pre_nms_score_threshold: 0.0, max_num_detections: 10}
studies:
  proxy: {space: spinenet_mbconv, budget: {rounds: 1, trials_per_round: 1}}
budget: {train_steps: 2, batch_size: 2, latency_runs: 5}
"""


def test_retraining_publishes_when_not_worse_and_keeps_latest_when_worse(tmp_path):
    files = write_detection_dataset(tmp_path / "data", num_train=4, num_validation=2)
    data = [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]
    uri = stages.init_experiment(SPEC, [f"store_root={tmp_path / 'store'}", *data])
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    assert stages.run_trial(uri, "proxy", trial_id).completed
    stages.export_model(uri, "proxy", trial_id, "v1")
    latest = f"{uri}/export/latest"
    new = write_detection_dataset(tmp_path / "new", num_train=4, num_validation=2, seed=11)
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
    records = {
        version: json.loads(Path(uri, "retraining", f"{version}.json").read_text())
        for version in ("v2", "v3")
    }
    assert [r["status"] for r in records.values()] == ["published", "rejected"]
    assert records["v3"]["previous_version"] == "v2"
    assert records["v3"]["previous_score"] == current.metrics["AP"]
    assert records["v3"]["tolerance"] == -2.0
    assert open_experiment(uri).records.trial_ids(RETRAINING) == [1, 2]
