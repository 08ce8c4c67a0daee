"""The retraining pipeline under ``kfp.local``: publish a retrained model, then reject one.

The session's shared detection experiment (``exported_detection`` in ``tests/shared_fixtures.py``:
one 2-step spinenet_mbconv trial exported as ``v1`` through the stages) is copied, since retraining
writes to it. The retraining pipeline then runs twice on new generated data (another seed), each
step a subprocess of this Python, each run training the exported architecture 2 steps. COCO's AP
lies in [0, 1], or is -1 when undefined, so with tolerance 2.0 a retraining is never worse by more
than that: it publishes ``v2`` and ``export/latest`` moves to it; with tolerance -2.0 (better by
two whole AP points: impossible) it is rejected, the run still succeeds, and ``latest`` stays at
``v2``.
"""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared_fixtures import copy_experiment

from kfnas.config.studies import RETRAINING
from kfnas.data import write_detection_dataset
from kfnas.export.handoff import read_handoff
from kfnas.pipelines.local import run_retraining_locally
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]


def test_retraining_publishes_when_not_worse_and_keeps_latest_when_worse(
    tmp_path, exported_detection
):
    uri = copy_experiment(exported_detection, tmp_path).uri
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
