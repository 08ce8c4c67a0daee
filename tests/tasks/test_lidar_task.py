"""The ``lidar_detection`` task: its options, input pipeline, pillars and a real PointPillars trial.

The trial is the smallest real one: a ``pointpillars`` architecture at a quarter of its widths on
4 generated training and 2 validation scenes (64 x 64 pillars of 0.4 m), trained 3 steps, then
evaluated by the rotated-box AP of ``kfnas.tasks.lidar_metrics`` and measured (latency, FLOPs,
parameters) like any trial. It is shared by the tests below (a module fixture).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kfnas.config.spec import BudgetSpec, TaskSpec, parse_spec
from kfnas.records.trial import TrialStatus
from kfnas.tasks import TASKS
from kfnas.tasks.lidar_detection import LIDAR_DETECTION, METRIC_NAMES
from kfnas.validation import validate

#: Proxy-sized model knobs: narrow network and head, few pillars and points.
TINY_OPTIONS = {
    "filter_size_scale": 0.25,
    "decoder_num_filters": 16,
    "head_num_filters": 16,
    "max_points": 1024,
    "max_pillars": 512,
    "max_points_per_pillar": 8,
    "validation_batch_size": 2,
}
TRIAL_SPEC = """
name: lidar-trial
task: {{kind: lidar_detection, num_classes: 3, image_size: 64, options: {options}}}
studies:
  proxy: {{space: pointpillars}}
budget: {{train_steps: 3, batch_size: 2, latency_runs: 5}}
measurement: {{min_seconds: 0}}
objectives: {{metric: AP_BEV_loose}}
"""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from kfnas.data import GENERATORS

    return GENERATORS.get("lidar_detection")(
        tmp_path_factory.mktemp("lidar"), num_train=4, num_validation=2, seed=1
    )


def _task(**options) -> TaskSpec:
    return TaskSpec(
        kind="lidar_detection", num_classes=3, image_size=64, options={**TINY_OPTIONS, **options}
    )


def test_lidar_detection_is_a_registered_task_kind():
    assert TASKS.get("lidar_detection") is LIDAR_DETECTION
    assert LIDAR_DETECTION.default_metric in METRIC_NAMES
    assert LIDAR_DETECTION.input_shape(_task()) == (1024, 4)
    assert LIDAR_DETECTION.option_problems(_task()) == []


@pytest.mark.parametrize(
    ("options", "image_size", "expected"),
    [
        # 20 m / 0.4 m = 50 cells: level 3 (stride 8) cannot divide it.
        ({"point_range": [-10, -10, -3, 10, 10, 3]}, 50, "make it a multiple of 8, e.g. 56"),
        # 25.6 m / 0.3 m = 85.3: not a whole number of pillars.
        ({"pillar_size": 0.3}, 64, "not a whole number of pillars of 0.3 m"),
        ({}, 128, "task.image_size 128 must be the BEV grid's column count, 64"),
        ({"point_range": [1, -12.8, -3, -1, 12.8, 3]}, 64, "each minimum below its maximum"),
        ({"point_range": [0, 1]}, 64, "six numbers"),
        ({"class_names": ["car"]}, 64, "lists 1 entries for 3 classes"),
        ({"iou_thresholds": [0.7, 0.5, 1.5]}, 64, "IoUs in (0, 1]"),
        ({"aug_scale_min": 1.2}, 64, "aug_scale_min must not exceed"),
    ],
)
def test_bad_options_are_refused_with_the_fix(options, image_size, expected):
    task = TaskSpec(
        kind="lidar_detection",
        num_classes=3,
        image_size=image_size,
        options={**TINY_OPTIONS, **options},
    )
    problems = LIDAR_DETECTION.option_problems(task)
    assert any(expected in p for p in problems), problems


@pytest.mark.tf
def test_the_pipeline_yields_padded_clouds_and_labelled_anchors(scenes):
    import tensorflow as tf

    from kfnas.data.lidar import parse_scene

    official = LIDAR_DETECTION.build_task(_task(), scenes.data_spec(), BudgetSpec(batch_size=2))
    data = official.build_inputs(official.task_config.validation_data)
    points, labels = next(iter(data))
    assert points.shape == (2, 1024, 4)
    first = next(iter(tf.data.TFRecordDataset(scenes.validation[0]).map(parse_scene)))
    count = min(int(tf.shape(first["points"])[0]), 1024)
    inside = first["points"][:count].numpy()
    # Evaluation keeps the cloud's first points (all inside the range here), then NaN padding.
    np.testing.assert_array_equal(points[0, :count].numpy(), inside)
    assert np.isnan(points[0, count:].numpy()).all()
    truth = labels["groundtruths"]
    objects = int(truth["count"][0])
    assert objects == int(tf.shape(first["boxes"])[0]) > 0
    np.testing.assert_allclose(truth["boxes"][0, :objects].numpy(), first["boxes"].numpy())
    # Every object has at least one positive anchor (official's labeler forces a match).
    positives = sum(
        int(tf.reduce_sum(tf.cast(t[0] > 0, tf.int32))) for t in labels["cls_targets"].values()
    )
    assert positives >= objects
    assert set(labels["attribute_targets"]) == {"heading", "z", "height"}


@pytest.mark.tf
def test_training_augmentation_moves_points_and_boxes_together(scenes):
    """A flipped, rotated and scaled scene keeps every labelled box around its own points."""
    import tensorflow as tf

    from kfnas.tasks.lidar_detection import lidar_inputs
    from kfnas.tasks.lidar_metrics import box_corners_bev

    official = LIDAR_DETECTION.build_task(
        _task(aug_rotation=math.pi / 4), scenes.data_spec(), BudgetSpec(batch_size=1)
    )
    config = official.task_config
    tf.random.set_seed(3)
    points, labels = next(iter(lidar_inputs(config, config.train_data)))
    cloud = points[0].numpy()
    cloud = cloud[np.isfinite(cloud).all(axis=1)]
    truth = labels["groundtruths"]
    for box in truth["boxes"][0, : int(truth["count"][0])].numpy():
        # Points inside the box's footprint, in its own frame (a margin for the sampling noise).
        d = cloud[:, :2] - box[:2]
        c, s = math.cos(box[6]), math.sin(box[6])
        along, across = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
        inside = (abs(along) <= box[3] / 2 + 0.1) & (abs(across) <= box[4] / 2 + 0.1)
        assert inside.sum() >= 5, box
        assert box_corners_bev(box[None]).shape == (1, 4, 2)


@pytest.fixture(scope="module")
def trial_run(scenes, tmp_path_factory):
    """One real pointpillars trial, trained, evaluated and measured: (spec, trial, result, dir)."""
    from kfnas.training.runner import execute_trial, local_trial

    spec = validate(
        parse_spec(
            TRIAL_SPEC.format(options=json.dumps(TINY_OPTIONS)),
            [f"data.train={scenes.train_pattern}", f"data.validation={scenes.validation_pattern}"],
        )
    )
    trial = local_trial(spec, "proxy", seed=4)
    work = tmp_path_factory.mktemp("lidar-trial")
    return spec, trial, execute_trial(spec, trial, work), work


@pytest.mark.tf
def test_a_pointpillars_trial_trains_evaluates_and_is_measured(trial_run):
    _, _, result, work = trial_run
    assert result.status is TrialStatus.COMPLETED, result.error
    for name in METRIC_NAMES:
        assert -1.0 <= result.metrics[name] <= 1.0, result.metrics
    assert result.metrics["params"] > 0 and result.metrics["flops"] > 0
    assert result.metrics["latency_ms"] > 0
    assert result.reward == pytest.approx(result.metrics["AP_BEV_loose"])
    assert (work / "model").is_dir() and (work / "logs").is_dir()
    assert result.metrics["train_step_traces"] == 1  # every variable made before the trace


@pytest.mark.tf
def test_the_exported_model_serves_a_point_cloud(trial_run, scenes, tmp_path):
    import tensorflow as tf

    from kfnas.data.lidar import parse_scene
    from kfnas.export.saved_model import export_saved_model

    spec, trial, _, work = trial_run
    record = export_saved_model(spec, trial, str(work / "model"), str(tmp_path / "export"))
    assert record.signatures == ("serving_default",)
    assert set(record.outputs) == {
        "detection_boxes",
        "detection_scores",
        "detection_classes",
        "num_detections",
    }
    served = tf.saved_model.load(record.saved_model_dir)
    scene = next(iter(tf.data.TFRecordDataset(scenes.validation[0]).map(parse_scene)))
    cloud = scene["points"][tf.newaxis]  # any number of points
    out = served.signatures["serving_default"](inputs=cloud)
    boxes, count = out["detection_boxes"].numpy(), int(out["num_detections"][0])
    assert boxes.shape[0] == 1 and boxes.shape[-1] == 7
    assert np.isfinite(boxes).all()
    classes = out["detection_classes"].numpy()[0, :count]
    assert ((classes >= 1) & (classes <= 3)).all()
    # NaN rows are padding: the same cloud padded gives the same detections.
    padded = tf.concat([cloud, tf.fill([1, 100, 4], math.nan)], axis=1)
    again = served.signatures["serving_default"](inputs=padded)
    np.testing.assert_allclose(
        again["detection_scores"].numpy(), out["detection_scores"].numpy(), atol=1e-5
    )


@pytest.mark.tf
def test_empty_scenes_are_skipped_by_the_pipeline(tmp_path, caplog):
    """A scene with no point inside the range is counted by the data check and never trained on."""
    import tensorflow as tf

    from kfnas.config.spec import DataSpec
    from kfnas.data.lidar import scene_example

    box = np.array([[2.0, 1.0, -0.8, 4.2, 1.8, 1.5, 0.3]], np.float32)
    inside = np.array([[2.0, 1.0, -0.5, 0.3]] * 20, np.float32)
    outside = np.array([[40.0, 0.0, 0.0, 0.5]] * 20, np.float32)  # beyond +-12.8 m
    path = tmp_path / "scenes.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(scene_example(outside, np.zeros((0, 7), np.float32), np.zeros(0), "empty"))
        writer.write(scene_example(inside, box, np.array([1]), "one-car"))
        writer.write(scene_example(np.zeros((0, 4), np.float32), box[:0], np.zeros(0), "none"))
    data = DataSpec(train=str(path), validation=str(path))
    with caplog.at_level("WARNING"):
        assert LIDAR_DETECTION.data_problems(_task(), data) == []
    # Both splits read the same file: 2 of 3 scenes each.
    assert "4 of the 6 LiDAR scenes read have no point inside the point range" in caplog.text
    official = LIDAR_DETECTION.build_task(_task(), data, BudgetSpec(batch_size=1))
    batches = list(official.build_inputs(official.task_config.validation_data))
    assert len(batches) == 1  # the one scene with points
    assert int(batches[0][1]["groundtruths"]["count"][0]) == 1
