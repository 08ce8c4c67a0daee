"""The search pipeline under ``kfp.local`` for LiDAR 3-D detection, chosen by parameters only.

The same base spec as ``test_pipeline_task_kinds.py`` (a detection spec) becomes a PointPillars
search through pipeline parameters alone: ``task_kind: lidar_detection``, ``space:
pointpillars``, the generated point-cloud scenes, the metric and one ``task.options`` override.
The run is the smallest the DAG allows (1 proxy trial, its validation by full training, the final
training and the export; 2-3 steps at batch 2 on 8 training and 4 validation scenes). Checked: every
study's trial completes with the task's metrics, the latency step measured it, the report and
model card speak of point clouds, and the exported SavedModel serves a cloud.
"""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
from local_pipeline import run_logged

from kfnas.data import GENERATORS
from kfnas.export.saved_model import read_export_record
from kfnas.records.trial import TrialStatus
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

BASE_SPEC = """
name: pipeline-e2e
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, head_num_convs: 1, head_num_filters: 16}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 3, tournament_size: 2}}
budget: {train_steps: 2, batch_size: 2, latency_runs: 5}
measurement: {min_seconds: 0}
objectives:
  metric: AP
  reward: mnas
  constraints: [{measure: latency_ms, target: 5.0}]
seed: 3
"""
OPTIONS = {
    "filter_size_scale": 0.25,
    "decoder_num_filters": 16,
    "head_num_filters": 16,
    "max_points": 1024,
    "max_pillars": 512,
    "max_points_per_pillar": 8,
    "validation_batch_size": 2,
}
METRIC = "AP_BEV_loose"
STUDIES = ("proxy", "validation", "final")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-lidar")
    files = GENERATORS.get("lidar_detection")(root / "data", num_train=8, num_validation=4)
    arguments = {
        "spec_yaml": BASE_SPEC,
        "experiment_name": "pipeline-lidar",
        "store_root": str(root / "store"),
        "task_kind": "lidar_detection",
        "space": "pointpillars",
        "num_classes": 3,
        "train_data": files.train_pattern,
        "validation_data": files.validation_pattern,
        "metric": METRIC,
        "trials_per_round": 1,
        "proxy_train_steps": 2,
        "full_train_steps": 3,
        "full_batch_size": 2,
        "model_version": "v1",
        "overrides": [
            f"task.options={json.dumps(OPTIONS)}",
            "studies.validation.budget.latency_runs=5",
        ],
    }
    counts = {"rounds": 1, "trials_per_round": 1, "parallelism": 1, "top_k": 1}
    with contextlib.ExitStack() as stack:
        uri, wall_s = run_logged(arguments, counts, root, "the lidar", stack)
    print(f"\nlidar_detection (pointpillars) pipeline run: {wall_s:.0f} s")
    return uri, files


def test_every_study_completed_with_the_lidar_metrics(run):
    uri, _ = run
    exp = open_experiment(uri)
    assert (exp.spec.task.kind, exp.spec.task.options) == ("lidar_detection", OPTIONS)
    for study in STUDIES:
        assert exp.spec.study(study).space == "pointpillars"
        result = exp.records.read_result(study, 1)
        assert result.status is TrialStatus.COMPLETED, (study, result.error)
        for name in ("AP", "APH", "AP_BEV", METRIC):
            assert -1.0 <= result.metrics[name] <= 1.0, result.metrics
        assert result.metrics["latency_ms"] > 0 and result.metrics["flops"] > 0
        assert result.reward is not None and np.isfinite(result.reward)


def test_the_report_and_model_card_speak_of_point_clouds(run):
    uri, _ = run
    exp = open_experiment(uri)
    assert METRIC in exp.store.read_text(exp.layout.report_markdown())
    assert exp.store.exists(exp.layout.report_html())
    card = exp.store.read_text(exp.layout.model_card("v1"))
    assert "point clouds of 4 features per point" in card
    assert "images" not in card.split("## Known limits")[0]


def test_the_exported_model_serves_a_point_cloud(run):
    import tensorflow as tf

    from kfnas.data.lidar import parse_scene

    uri, files = run
    exp = open_experiment(uri)
    record = read_export_record(exp.store.uri(exp.layout.export_dir("v1")))
    assert (record.task_kind, record.study, record.input_size) == (
        "lidar_detection",
        "final",
        (1024, 4),
    )
    served = tf.saved_model.load(record.saved_model_dir)
    scene = next(iter(tf.data.TFRecordDataset(files.validation[0]).map(parse_scene)))
    clouds = tf.stack([scene["points"], tf.fill(tf.shape(scene["points"]), math.nan)])
    out = served.signatures["serving_default"](inputs=clouds)
    assert out["detection_boxes"].shape[:1] == (2,) and out["detection_boxes"].shape[-1] == 7
    assert int(out["num_detections"][1]) == 0  # an all-padding cloud has no points: nothing found
